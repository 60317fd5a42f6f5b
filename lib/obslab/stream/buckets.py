"""The latency histogram's log buckets, without Spark: the constants and arithmetic the stream's transform,
its sink, data quality and the offline replay share.

Bucket b holds latencies in (GAMMA^b, GAMMA^(b+1)]. Reporting 2*GAMMA^(b+1)/(GAMMA+1) for a
bucket keeps every percentile within (GAMMA-1)/(GAMMA+1) = 0.99 % of the true sample value
(the DDSketch bound), whatever the distribution, and buckets of different batches add up exactly.
"""

from __future__ import annotations

import math

GAMMA = 1.02
RELATIVE_ACCURACY = (GAMMA - 1) / (GAMMA + 1)
MIN_LATENCY_MS = 0.001  # 0 ms is legal; it goes into the lowest bucket


def bucket_value(bucket: int) -> float:
    """The latency a bucket stands for (used in SQL as 2*GAMMA^(b+1)/(GAMMA+1))."""
    return 2 * GAMMA ** (bucket + 1) / (GAMMA + 1)


def bucket_sql(latency: str) -> str:
    """DuckDB SQL for the log bucket of the latency column `latency` (as the transform's `latency_bucket`)."""
    return f"(ceil(ln(greatest({latency}, {MIN_LATENCY_MS})) / {math.log(GAMMA)!r})::INTEGER - 1)"
