"""# obslab_pipeline

The lab's pipeline as scheduled notebooks, every 5 minutes: **generate** (optional) -> **stream**
(`02_stream_aggregate`, available-now: what is new in `raw_events` since the last run) ->
**detect** (`03_detect_anomalies`, one run) -> **narrate** (`04_narrate_incidents`, one pass), the last
two on the lab's own store (`source="store"`; run by hand they default to a scratch store made by a replay).

Each task runs its notebook through Papermill with the `obslab` kernel; the executed notebook,
code and outputs, is kept as `data/runs/obslab_pipeline/<run_id>/<task_id>.ipynb`.
Parameters come from the lab's settings (`.env`); a run's params, when set, win.
`generate_seconds` > 0 first publishes that many seconds of the scenario's traffic (simulated,
ending now), so a workshop can run the whole loop from Airflow alone; 0 (default) skips it.
`stream_source` = `spans` counts the OpenTelemetry spans the Collector wrote (the shop's traffic,
`TOPIC_OTLP_SPANS`, its own checkpoint) instead of the generator's events, and skips generate.

The stream task fails at once when a continuous stream (`make demo`) holds the checkpoint.
"""

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG

from obslab.schedule.tasks import NotebookOperator, setting_params

with DAG(
    dag_id="obslab_pipeline",
    doc_md=__doc__,
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["obslab", "pipeline"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=15)},
    params=setting_params("generate_seconds", "scenario", "seed", "events_per_second", "stream_source",
                          "narrator_backend", "narrate_max_incidents"),
):
    generate = NotebookOperator(task_id="generate", notebook="01_generate_events",
                                fixed={"generate_to": "kafka", "generate_start": ""}, skip_unless="generate_seconds",
                                skip_if={"stream_source": "spans"})
    stream = NotebookOperator(task_id="stream", notebook="02_stream_aggregate",
                              fixed={"generate_seconds": 0, "send_late_event": False}, trigger_rule="none_failed")
    # the lab's own store, not the scratch store of a replay (the notebooks' default for a bare laptop)
    detect = NotebookOperator(task_id="detect", notebook="03_detect_anomalies", fixed={"source": "store"})
    narrate = NotebookOperator(task_id="narrate", notebook="04_narrate_incidents", fixed={"source": "store"})

    generate >> stream >> detect >> narrate
