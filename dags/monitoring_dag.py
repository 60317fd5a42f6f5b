"""# monitoring_dag

Every 5 minutes, `07_monitoring` checks the running lab: the broker answers, the stream's lag
(Kafka end offsets minus the offsets the stream committed), the freshness of the newest event,
the dead-letter rate, that the detector and the narrator ran recently, and that the narrator's
backend answers. Results go to the `health_checks` table (the dashboard shows them). A failed
check fails the task at once, with no retry (an alarm that waits for retries comes too late);
its message names the check, the value, the bound and what to do.
"""

from datetime import datetime, timezone

from airflow.sdk import DAG

from obslab.schedule.tasks import NotebookOperator, setting_params

with DAG(
    dag_id="monitoring_dag",
    doc_md=__doc__,
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["obslab", "monitoring"],
    default_args={"retries": 0},
    params=setting_params("health_max_lag_events", "health_max_freshness_seconds",
                          "health_max_dead_letter_rate", "health_max_stage_age_seconds"),
):
    NotebookOperator(task_id="checks", notebook="07_monitoring")
