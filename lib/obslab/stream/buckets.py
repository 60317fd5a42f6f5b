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


def percentiles_sql(keys: tuple[str, ...], scope: str) -> str:
    """p50/p95/p99 per `keys` from the histograms of the windows in `scope` (nearest-rank on buckets)."""
    k = ", ".join(keys)
    on = " AND ".join(f"h.{c} = s.{c}" for c in keys)

    def at(q: float) -> str:  # the value of the first bucket whose cumulative count reaches rank ceil(q * n)
        return f"2 * pow({GAMMA}, min(bucket) FILTER (WHERE cum >= ceil({q} * n)) + 1) / ({GAMMA} + 1)"

    return f"""
        SELECT {k}, {at(0.50)} AS p50, {at(0.95)} AS p95, {at(0.99)} AS p99
        FROM (
            SELECT {k}, bucket,
                   sum(c) OVER (PARTITION BY {k} ORDER BY bucket) AS cum,
                   sum(c) OVER (PARTITION BY {k}) AS n
            FROM (SELECT {", ".join("h." + c for c in keys)}, h.bucket, sum(h.count) AS c
                  FROM latency_histograms h JOIN {scope} s ON {on}
                  GROUP BY ALL)
        )
        GROUP BY {k}"""
