"""Smoke test of the one-command demo: `obslab demo` (what `make demo` runs) with a short scenario,
its own broker, data dir and ports. Within a bound the store has metrics, an incident and a
narrative; Ctrl-C (SIGINT) stops everything and leaves no process behind. And the demo's
supervisor: a stage that dies is restarted, a bounded number of times, and `obslab status` says so."""

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
from obslab.health import last_beat
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


# ---------------------------------------------------------------------- the supervisor

DETECT = [sys.executable, "-m", "obslab.cli", "detect", "--no-publish"]


def _supervise(supervisor, until, bound_s: float = 120) -> list[str]:
    """Check every 0.1 s until `until(messages)` holds; the messages said so far."""
    said = []
    deadline = time.monotonic() + bound_s  # a bound on a busy machine, not a measurement
    while not until(said):
        assert time.monotonic() < deadline, said
        said += supervisor.check()
        time.sleep(0.1)
    return said


@pytest.mark.slow
def test_a_stage_that_keeps_dying_is_restarted_a_bounded_number_of_times_and_status_says_so(tmp_path):
    from typer.testing import CliRunner

    from obslab.cli import app

    settings = load_settings(data_dir=tmp_path, duckdb_path=tmp_path / "observability.duckdb")
    # A real stage with a real fault that a restart cannot fix: a setting it refuses.
    env = {"DATA_DIR": str(tmp_path), "DUCKDB_PATH": "", "DETECT_POLL_SECONDS": "-1"}
    supervisor = demo.Supervisor(settings, [demo.spawn(settings, "detect", DETECT, env)], max_restarts=2, pause_s=0)
    said = _supervise(supervisor, lambda said: not supervisor.active)
    died = [m for m in said if m.startswith("detect exited with code 1")]
    assert len(died) == 3  # the first run and its two restarts
    assert all("error: invalid settings (DETECT_POLL_SECONDS" in m for m in died), said
    assert [m.split("; ")[-1] for m in died] == [  # what the demo prints each time
        "restarting in 0 s (1 of 2)", "restarting in 0 s (2 of 2)",
        f"not restarted: it was restarted 2 times already. See {settings.logs_dir / 'detect.log'}"]
    assert sum(m.startswith("detect restarted (pid ") for m in said) == 2

    [info] = demo.status(settings, ("detect",))
    assert (info.state, info.restarts, info.max_restarts, info.last_exit["code"]) == ("gave up", 2, 2, 1)
    shown = CliRunner().invoke(app, ["status"], env={"DATA_DIR": str(tmp_path), "DUCKDB_PATH": ""})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:2] == ["detect", "gave"] and "restarted 2 of at most 2 times" in lines[0]
    assert lines[1].split() == ["last", "success", "-"]  # it never completed a run
    assert lines[2].split()[:2] == ["last", "error"] and "exited with code 1" in lines[2]
    assert "DETECT_POLL_SECONDS" in lines[2]  # the error itself, not the log's last line


@pytest.mark.slow
def test_a_stage_that_ran_long_enough_before_dying_starts_a_new_count(tmp_path):
    """Deaths spread over a long run are not a crash loop: each after a stable run (here any run at all,
    stable_s=0) is restarted again, where a budget of one restart would otherwise be spent at once."""
    settings = load_settings(data_dir=tmp_path, duckdb_path=tmp_path / "observability.duckdb")
    env = {"DATA_DIR": str(tmp_path), "DUCKDB_PATH": "", "DETECT_POLL_SECONDS": "-1"}  # dies at once, each time
    supervisor = demo.Supervisor(settings, [demo.spawn(settings, "detect", DETECT, env)], max_restarts=1, pause_s=0,
                                 stable_s=0)
    said = _supervise(supervisor, lambda said: sum(m.startswith("detect restarted") for m in said) >= 3)
    died = [m for m in said if m.startswith("detect exited with code 1")]
    assert len(died) >= 3 and all(m.endswith("restarting in 0 s (1 of 1)") for m in died), said
    demo.stop(settings, broker=False, names=("detect",))


@pytest.mark.slow
def test_the_supervisor_goes_on_when_it_cannot_write_its_records(tmp_path):
    """A full disk (here: a folder where the record's temporary file goes, so every write fails) must not end
    the demo: the death is said, the restart waits, and happens once records can be written again."""
    settings = load_settings(data_dir=tmp_path, duckdb_path=tmp_path / "observability.duckdb")
    env = {"DATA_DIR": str(tmp_path), "DUCKDB_PATH": "", "DETECT_POLL_SECONDS": "-1"}  # dies at once
    supervisor = demo.Supervisor(settings, [demo.spawn(settings, "detect", DETECT, env)], pause_s=0)
    blocker = demo.run_dir(settings) / "detect.tmp"
    blocker.mkdir()  # writing the record now fails with an OSError, as on a full disk
    said = _supervise(supervisor, lambda said: any("could not be restarted" in m for m in said))
    assert any(m.startswith("could not record how detect ended") for m in said), said
    assert not supervisor.children  # the restart that could not be recorded does not run
    blocker.rmdir()
    said = _supervise(supervisor, lambda said: any(m.startswith("detect restarted") for m in said))
    demo.stop(settings, broker=False, names=("detect",))


@pytest.mark.slow
def test_a_killed_stage_is_restarted_and_runs_again(tmp_path):
    settings = load_settings(data_dir=tmp_path, duckdb_path=tmp_path / "observability.duckdb")
    env = {"DATA_DIR": str(tmp_path), "DUCKDB_PATH": "", "DETECT_POLL_SECONDS": "0.2"}
    first = demo.spawn(settings, "detect", DETECT, env)
    supervisor = demo.Supervisor(settings, [first], pause_s=0)
    try:
        os.killpg(first.pid, signal.SIGKILL)  # what the kernel's OOM killer does
        said = _supervise(supervisor, lambda said: any(m.startswith("detect restarted") for m in said))
        restarted_at = datetime.now(timezone.utc)
        assert said[0].startswith("detect was killed by SIGKILL at ")
        assert said[0].endswith(f"; restarting in 0 s (1 of {demo.MAX_RESTARTS})")
        [info] = demo.status(settings, ("detect",))
        assert (info.running, info.state, info.restarts) == (True, "running", 1) and info.pid != first.pid
        # the restarted stage works: it completes runs (its heartbeat), and status shows both
        _supervise(supervisor, lambda said: (b := last_beat(settings, "detect")) is not None and b.ok
                   and b.at > restarted_at)
        [stage] = [s for s in demo.stages(settings) if s.name == "detect"]
        assert stage.state == "running" and stage.last_success is not None
        assert stage.last_error[1].startswith("was killed by SIGKILL")
    finally:
        demo.stop(settings, grace_s=30, broker=False)
    assert not demo.status(settings)


def test_only_the_demo_s_generator_starts_its_scenario_with_a_lead_in(tmp_path):
    settings = load_settings(data_dir=tmp_path, demo_lead_in_seconds=45)
    env = {"SCENARIO": "demo", "BACKFILL_MINUTES": "10"}
    assert demo.process_env(settings, "generate", env) == {**env, "GENERATE_LEAD_IN_SECONDS": "45"}
    assert all(demo.process_env(settings, name, env) == env for name in demo.PROCESSES if name != "generate")
    off = load_settings(data_dir=tmp_path, demo_lead_in_seconds=0)
    assert demo.process_env(off, "generate")["GENERATE_LEAD_IN_SECONDS"] == "0"  # a demo without one


def test_a_process_group_lists_its_members_and_is_alive_until_they_exit():
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        assert demo.group_members(leader.pid) == [leader.pid]  # its own group, led by itself
        assert demo._group_alive(leader.pid)
        leader.kill()
        os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: still listed, a zombie
        assert not demo._group_alive(leader.pid)  # a zombie is not alive
    finally:
        leader.kill()
        leader.wait()
    assert demo.group_members(leader.pid) == []  # reaped: nothing left in the group


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
