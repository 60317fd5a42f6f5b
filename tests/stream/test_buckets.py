"""obslab.stream.buckets: the log buckets in Python and in DuckDB SQL agree with their definition."""

import duckdb
import pytest

from obslab.stream.buckets import GAMMA, RELATIVE_ACCURACY, bucket_sql, bucket_value


@pytest.mark.parametrize("latency", [
    0.0,  # legal: the lowest bucket (latencies are clamped to MIN_LATENCY_MS)
    0.5, 1.0, 1.02, 1.0201, 99.9, 100.0, 12_345.678,  # on and around bucket edges (1.02 = GAMMA^1)
])
def test_the_sql_bucket_holds_the_latency_and_its_value_is_within_the_bound(latency):
    [(bucket,)] = duckdb.sql(f"SELECT {bucket_sql('x')} FROM (SELECT ?::DOUBLE AS x)", params=[latency]).fetchall()
    clamped = max(latency, 0.001)
    assert GAMMA ** bucket < clamped * (1 + 1e-12) and clamped <= GAMMA ** (bucket + 1) * (1 + 1e-12)
    assert abs(bucket_value(bucket) - clamped) / clamped <= RELATIVE_ACCURACY + 1e-9 or latency == 0.0


def test_the_sink_and_data_quality_merge_and_judge_without_spark():
    # the offline replay (obslab.scratch) merges with the sink; only the sink's Spark entry point needs Spark
    import subprocess
    import sys

    code = ("import sys, obslab.stream.sink, obslab.quality, obslab.stream.buckets; "
            "assert 'pyspark' not in sys.modules, 'a module of the light set-up imported pyspark'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
