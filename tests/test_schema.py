import pytest

from obslab.schema import SERVICE_METRICS, TABLES, Column, Table


def test_store_has_the_tables_the_pipeline_needs():
    assert set(TABLES) == {
        "service_metrics", "endpoint_metrics", "anomalies", "incident_summaries",
        "injected_incidents", "dead_letter_events", "pipeline_runs",
        "latency_histograms", "stream_batches", "stream_state",  # the stream's exactly-once state
        "stream_offsets", "stream_endpoints",  # the Kafka position the store counted to; kept endpoint names
        "incidents", "status_counts",  # detection; the error mix for the narrator
        "health_checks", "quality_checks",  # monitoring and data-quality results
        "service_catalog",  # the services a scenario declared: SLA, SLO, dependencies
    }


@pytest.mark.parametrize(
    "fragment",
    [
        "CREATE TABLE IF NOT EXISTS service_metrics",
        "window_start TIMESTAMPTZ NOT NULL",  # event time is timezone-aware
        "request_count BIGINT NOT NULL",
        "PRIMARY KEY (service, window_start)",  # the upsert key of the stream sink
    ],
)
def test_duckdb_ddl(fragment):
    assert fragment in SERVICE_METRICS.ddl()


def test_bad_definitions_are_rejected():
    with pytest.raises(ValueError, match="unknown type"):
        Column("x", "decimal")
    with pytest.raises(ValueError, match="key columns"):
        Table("t", (Column("a", "int"),), key=("b",))
