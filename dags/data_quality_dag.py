"""# data_quality_dag

Every 6 hours, `08_data_quality` validates the store (nulls, ranges, duplicate and misaligned
windows, gaps, error rates against counts, incidents without windows, summaries without
incidents), records the result per rule in `quality_checks`, deletes what is older than
`RETENTION_DAYS` (metrics, anomalies, incidents, summaries, dead letters, run records) and
compacts the store. A failed rule fails the task after retention has run.
"""

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG

from obslab.schedule.tasks import NotebookOperator, setting_params

with DAG(
    dag_id="data_quality_dag",
    doc_md=__doc__,
    schedule="0 */6 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["obslab", "data-quality"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params=setting_params("retention_days", "window_seconds"),
):
    NotebookOperator(task_id="quality", notebook="08_data_quality")
