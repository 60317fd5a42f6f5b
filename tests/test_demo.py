"""Smoke test of the one-command demo: `obslab demo` (what `make demo` runs) with a short scenario,
its own broker, data dir and ports. Within a bound the store has metrics, an incident and a
narrative; Ctrl-C (SIGINT) stops everything and leaves no process behind. (The supervisor that
restarts a stage that dies: tests/test_supervisor.py.)"""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import psutil
import pytest

from conftest import free_port
from obslab import demo
from obslab.lab import Lab
from obslab.processes import process_alive
from obslab.settings import load_settings
from obslab.stream.server import SparkServer


SCENARIO = """\
name: demo-smoke
duration_seconds: 600
traffic: {events_per_second: 20}
faults:
  - {type: error_surge, service: payments, start_seconds: 30, duration_seconds: 120, magnitude: 0.35}
"""


def _count(store, sql):
    try:
        return store.query(sql)[0][0] if store.path.exists() and store.schema_version() >= 4 else 0
    except Exception:  # noqa: BLE001 - the store may be busy for a moment; ask again
        return 0


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_make_demo_runs_the_pipeline_and_stops_cleanly(tmp_path, record_property):
    scenario = tmp_path / "demo-smoke.yaml"
    scenario.write_text(SCENARIO)
    port, controller, web, spark_port = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "KAFKA_PORT": str(port),
           "KAFKA_CONTROLLER_PORT": str(controller), "KAFKA_BOOTSTRAP_SERVERS": "", "DUCKDB_PATH": "",
           "SPARK_CONNECT_PORT": str(spark_port), "SPARK_SERVER": "auto"}
    settings = load_settings(data_dir=tmp_path / "data", kafka_port=port, kafka_controller_port=controller,
                             kafka_bootstrap_servers="", spark_connect_port=spark_port)
    store = Lab(settings).store
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "obslab.cli", "demo", "--scenario", str(scenario),
                             "--backfill-minutes", "5", "--port", str(web), "--minutes", "10"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = {}
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and len(seen) < 3 and proc.poll() is None:
            for name, sql in (("metrics", "SELECT count(*) FROM service_metrics"),
                              ("incident", "SELECT count(*) FROM incidents WHERE service = 'payments'"),
                              ("narrative", "SELECT count(*) FROM incident_summaries")):
                if name not in seen and _count(store, sql) > 0:
                    seen[name] = round(time.monotonic() - began, 1)
            time.sleep(1)
        running = {p.name for p in demo.status(settings) if p.running}
        groups = [p.pid for p in demo.status(settings)]
        spark = SparkServer(settings).pid()  # the lab's one Spark, which the stream uses
        stream = next(p.pid for p in demo.status(settings) if p.name == "stream")
        jvms_of_stream = [c.pid for c in psutil.Process(stream).children(recursive=True) if c.name() == "java"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    logs = "\n".join(f"--- {p.name}\n" + p.log.read_text()[-1500:] for p in
                     [demo.ProcessInfo(n, 0, [], settings.logs_dir / f"{n}.log", False, "") for n in demo.PROCESSES]
                     if p.log.exists())
    assert set(seen) == {"metrics", "incident", "narrative"}, (seen, out[-2000:], logs)
    assert running == set(demo.PROCESSES), (running, logs)
    assert spark is not None, logs
    assert jvms_of_stream == [], logs  # it is a client of the lab's Spark: no JVM of its own
    assert "dashboard: http://127.0.0.1:" in out and "first incident narrated" in out, out[-2000:]
    record_property("demo_seconds_to_first_narrative", seen["narrative"])
    print(f"\ndemo: metrics after {seen['metrics']} s, incident after {seen['incident']} s, narrative after "
          f"{seen['narrative']} s")
    # Nothing of the demo is left: no member of any process group it started, no broker. (A killed
    # process can stay listed for a moment until it is reaped: allow it that moment.)
    def leftovers() -> list[str]:
        found = [m for pgid in groups for m in
                 subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()]
        broker = subprocess.run(["pgrep", "-f", str(tmp_path / "data" / "kafka")], capture_output=True, text=True)
        return found + broker.stdout.split() + ([str(spark)] if process_alive(spark) else [])

    deadline = time.monotonic() + 30
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers() == [], subprocess.run(["ps", "-o", "pid,stat,cmd", "-p", ",".join(leftovers())],
                                             capture_output=True, text=True).stdout
    assert not list((tmp_path / "data" / "run").glob("*.json"))


def test_only_the_demo_s_generator_starts_its_scenario_with_a_lead_in(tmp_path):
    settings = load_settings(data_dir=tmp_path, demo_lead_in_seconds=45)
    env = {"SCENARIO": "demo", "BACKFILL_MINUTES": "10"}
    assert demo.process_env(settings, "generate", env) == {**env, "GENERATE_LEAD_IN_SECONDS": "45"}
    assert all(demo.process_env(settings, name, env) == env for name in demo.PROCESSES if name != "generate")
    off = load_settings(data_dir=tmp_path, demo_lead_in_seconds=0)
    assert demo.process_env(off, "generate")["GENERATE_LEAD_IN_SECONDS"] == "0"  # a demo without one


def test_the_first_narration_is_this_run_s_not_an_earlier_demo_s(tmp_path):
    settings = load_settings(data_dir=tmp_path, duckdb_path=tmp_path / "observability.duckdb")
    store = Lab(settings).store
    earlier, began = datetime(2026, 12, 5, 10, 0, tzinfo=timezone.utc), datetime(2026, 12, 5, 11, 0, tzinfo=timezone.utc)
    store.upsert("incident_summaries", [{
        "incident_id": "checkout:latency:1", "facts_hash": "a", "facts": "{}", "title": "an earlier demo's",
        "summary": "s", "grounded": True, "backend": "template", "created_at": earlier}])
    assert demo.first_narration(store, began.timestamp()) is None  # the earlier run's narrative is not ours
    store.upsert("incident_summaries", [{
        "incident_id": "payments:errors:1", "facts_hash": "b", "facts": "{}", "title": "this run's",
        "summary": "s", "grounded": True, "backend": "template", "created_at": began.replace(minute=2)}])
    assert demo.first_narration(store, began.timestamp()) == (120.0, "this run's")  # 2 min after it began
