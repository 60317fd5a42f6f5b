"""The live pipeline, end to end: `obslab generate` -> Kafka -> `obslab stream` (Spark) -> store ->
`obslab detect` -> incidents in the store and on the anomalies topic. One error surge is injected;
the test checks that its incident opens and then resolves, and reports how long detection took.

Windows are 10 s here (a settings change only) so the incident can resolve within the test.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic

from obslab.broker import admin_client, consumer
from obslab.lab import Lab
from tests.stream.helpers import lab_for

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

SCENARIO = """\
name: live-surge
duration_seconds: 150
traffic: {events_per_second: 30}
faults:
  - {type: error_surge, service: payments, start_seconds: 60, duration_seconds: 20, magnitude: 0.4}
"""


def _start(args, env, name, tmp_path):
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "obslab.cli", *args], env=env, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)


def _stop(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _incident(store):
    if not store.path.exists() or store.schema_version() < 3:
        return None
    rows = store.query("SELECT incident_id, status, opened_at, resolved_at FROM incidents "
                       "WHERE service = 'payments' AND kind = 'errors'")
    return rows[0] if rows else None


def test_an_injected_error_surge_opens_an_incident_that_then_resolves(broker, lab_settings, tmp_path,
                                                                       record_property):
    settings = lab_for(lab_settings, tmp_path, window_seconds=10, watermark_seconds=5, trigger_seconds=2,
                       detect_poll_seconds=1, resolve_after_windows=3, topic_anomalies=f"anom_{uuid.uuid4().hex[:8]}")
    admin = admin_client(settings)
    admin.create_topics([NewTopic(settings.topic_anomalies, 1, 1)])
    admin.close()
    scenario = tmp_path / "live-surge.yaml"
    scenario.write_text(SCENARIO)
    env = {**os.environ, "DATA_DIR": str(tmp_path), "DUCKDB_PATH": str(settings.duckdb_path),
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "TOPIC_RAW_EVENTS": settings.topic_raw_events, "TOPIC_AGGREGATED_METRICS": settings.topic_aggregated_metrics,
           "TOPIC_ANOMALIES": settings.topic_anomalies, "WINDOW_SECONDS": "10", "WATERMARK_SECONDS": "5",
           "TRIGGER_SECONDS": "2", "DETECT_POLL_SECONDS": "1", "RESOLVE_AFTER_WINDOWS": "3",
           "SCENARIO": str(scenario), "BACKFILL_MINUTES": "0", "SEED": "11"}
    store = Lab(settings).store
    procs = [_start(["stream"], env, "stream", tmp_path), _start(["detect"], env, "detect", tmp_path)]
    try:
        procs.append(_start(["generate"], env, "generate", tmp_path))
        first_seen = resolved_seen = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and resolved_seen is None:
            for proc, name in zip(procs[:2], ("stream", "detect")):
                assert proc.poll() is None, f"{name} exited: " + (tmp_path / f"{name}.log").read_text()[-3000:]
            found = _incident(store)
            now = datetime.now(timezone.utc)
            if found and first_seen is None:
                first_seen = now
            if found and found[1] == "resolved":
                resolved_seen = now
            time.sleep(0.5)
        batches_before_fault = store.query(
            "SELECT count(*) FROM stream_batches b, injected_incidents f WHERE b.applied_at < f.start_time")[0][0]
    finally:
        _stop(procs)

    fault_start, fault_end = store.query("SELECT start_time, end_time FROM injected_incidents")[0]
    assert batches_before_fault > 0, "the stream was not running yet when the fault began"
    assert first_seen is not None, "no incident was opened: " + (tmp_path / "detect.log").read_text()[-2000:]
    assert resolved_seen is not None, "the incident never resolved"
    incident_id, status, opened_at, resolved_at = _incident(store)
    # It opened in a window the fault reached (its first, or the next when it began late in one).
    assert status == "resolved" and fault_start - timedelta(seconds=10) < opened_at < fault_end < resolved_at
    took = (first_seen - fault_start).total_seconds()
    assert took > 0
    record_property("live_time_to_detect_seconds", round(took, 1))
    print(f"\nlive pipeline: the error surge became an incident {took:.1f} s after it began "
          f"(10 s windows, 2 s trigger, 1 s poll)")

    # The incident was published when it opened and when it resolved.
    c = consumer(settings, consumer_timeout_ms=5000)
    c.assign([TopicPartition(settings.topic_anomalies, 0)])
    statuses = [json.loads(m.value)["status"] for m in c if json.loads(m.value)["incident_id"] == incident_id]
    c.close()
    assert statuses[0] == "open" and statuses[-1] == "resolved"
