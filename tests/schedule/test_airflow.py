"""The three DAGs run end to end under `airflow dags test` against the real broker, Spark, DuckDB
and the embedded model; planted faults fail their tasks; `make airflow` gives a loopback-only
Airflow with a generated password. Each test works in its own lab folder with its own topics."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import free_port
from obslab.broker import LocalBroker, end_offsets
from obslab.schedule import kernels, server
from obslab.settings import load_settings
from obslab.store import Store

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]
ROOT = server.ROOT


def _lab(tmp, base, name: str, **overrides):
    """Settings of an isolated lab on the shared broker: own data folder, own topics, free Airflow port."""
    settings = load_settings(data_dir=tmp / "data", kafka_port=base.kafka_port,
                             kafka_controller_port=base.kafka_controller_port, kafka_bootstrap_servers="",
                             topic_raw_events=f"{name}_raw", topic_aggregated_metrics=f"{name}_metrics",
                             topic_anomalies=f"{name}_anomalies", airflow_port=free_port(), **overrides)
    LocalBroker(settings).ensure_topics()
    return settings


def run_dag(settings, dag_id: str, conf: dict | None = None, dags: Path | None = None, extra_env=None,
            timeout: float = 900) -> subprocess.CompletedProcess:
    """`airflow dags test DAG_ID` with the lab's environment; output (stdout+stderr) in `.stdout`."""
    env = {**os.environ, **server.environment(settings), **(extra_env or {})}
    if dags is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    cmd = [str(Path(sys.executable).with_name("airflow")), "dags", "test", dag_id]
    if conf:
        cmd += ["-c", json.dumps(conf)]
    return subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def pipeline_lab(broker, lab_settings, tmp_path_factory):
    """A lab where one `obslab_pipeline` run generated 5 minutes of demo traffic and processed it."""
    settings = _lab(tmp_path_factory.mktemp("pipeline"), lab_settings, "afpipe")
    server.prepare(settings)
    # the lab's kernel zygote, as `obslab airflow start` runs it: the tasks' kernels are forked from it
    zygote = kernels.socket_path(settings)
    log = settings.data_dir / "zygote.log"
    with log.open("w") as out:
        proc = subprocess.Popen(server.commands(settings)["airflow-kernels"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while not zygote.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert zygote.exists(), log.read_text()[-3000:]
        began = datetime.now(timezone.utc)
        done = run_dag(settings, "obslab_pipeline", {"generate_seconds": 300})
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return settings, done, began


def test_the_pipeline_turns_published_events_into_windows_incidents_and_a_summary(pipeline_lab):
    settings, done, _ = pipeline_lab
    assert done.returncode == 0, done.stdout[-5000:]
    store = Store.from_settings(settings)
    runs = store.query("SELECT stage, status, output_notebook FROM pipeline_runs ORDER BY started_at")
    assert [(r[0], r[1]) for r in runs] == [("generate", "ok"), ("stream", "ok"), ("detect", "ok"), ("narrate", "ok")]
    # each task's kernel was forked by the zygote (one a task), none started the usual way
    assert (settings.data_dir / "zygote.log").read_text().count("kernels: child ") == 4
    assert "starting the kernel the usual way" not in done.stdout
    # every event the generate task published was counted once, and none was set aside
    published = sum(end_offsets(settings, [settings.topic_raw_events])[settings.topic_raw_events].values())
    counted, dead = store.query("SELECT sum(events), sum(dead_letters) FROM stream_batches")[0]
    assert published > 2_000  # 300 s of the demo scenario at its 10 events/s
    assert (counted, dead) == (published, 0)
    assert store.query("SELECT sum(request_count) FROM service_metrics")[0][0] == published
    # the scenario's payments error surge became an incident, and the narrator explained it
    truth = store.query("SELECT service FROM injected_incidents WHERE fault_type = 'error_surge'")
    assert truth == [("payments",)]
    incidents = store.query("SELECT incident_id FROM incidents WHERE service = 'payments' AND kind = 'errors'")
    assert incidents
    summaries = store.query("SELECT backend, summary FROM incident_summaries WHERE incident_id = ?", [incidents[0][0]])
    assert summaries and summaries[0][1]


def test_kept_notebooks_show_code_and_outputs(pipeline_lab):
    settings, done, _ = pipeline_lab
    assert done.returncode == 0
    kept = sorted((settings.data_dir / "runs" / "obslab_pipeline").glob("*/*.ipynb"))
    assert [p.stem for p in kept] == ["detect", "generate", "narrate", "stream"]
    for path in kept:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        # report mode would hide every input: here each code cell keeps its source visible
        assert all(not c["metadata"].get("jupyter", {}).get("source_hidden") for c in code), path.name
        assert any("from obslab" in "".join(c["source"]) for c in code), path.name
        assert any(c.get("outputs") for c in code), path.name
        injected = [c for c in code if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(injected) == 1, path.name
    stream = json.loads(kept[3].read_text())
    injected = "".join(next(c for c in stream["cells"] if "injected-parameters" in c["metadata"].get("tags", []))["source"])
    assert "generate_seconds = 0" in injected and f'checkpoint_name = "{settings.checkpoint_name}"' in injected


def test_the_stream_task_fails_at_once_while_a_continuous_stream_holds_the_checkpoint(pipeline_lab):
    settings, done, _ = pipeline_lab
    assert done.returncode == 0
    env = {**os.environ, **server.environment(settings)}
    stream = subprocess.Popen([sys.executable, "-m", "obslab.cli", "stream"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    lock = settings.checkpoints_dir / settings.checkpoint_name / "obslab.lock"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and f"PID {stream.pid}" not in (lock.read_text() if lock.exists() else ""):
            time.sleep(0.2)
        assert f"PID {stream.pid}" in lock.read_text()
        began = time.monotonic()
        cmd = [str(Path(sys.executable).with_name("airflow")), "tasks", "test", "obslab_pipeline", "stream"]
        task = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=600)
        seconds = time.monotonic() - began
    finally:
        os.killpg(stream.pid, signal.SIGKILL)
        stream.wait(timeout=30)
    # `airflow tasks test` exits 0 whatever the task did; the task's own state says it failed
    assert "new_state=up_for_retry" in task.stdout or "new_state=failed" in task.stdout
    assert "new_state=success" not in task.stdout
    assert f"is in use by PID {stream.pid}" in task.stdout
    assert "a continuous stream" in task.stdout
    print(f"stream task failed after {seconds:.1f} s (kernel start and imports; no Spark session)")


def test_a_notebook_that_raises_fails_its_task_and_the_kept_notebook_shows_the_cell(broker, lab_settings, tmp_path):
    import nbformat

    settings = _lab(tmp_path, lab_settings, "afboom")
    server.prepare(settings)
    notebook = tmp_path / "boom.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "obslab", "display_name": "Python (obslab)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("seed: int = 1  # a parameter", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('before the failure')"),
                nbformat.v4.new_code_cell("raise RuntimeError(f'planted failure, seed {seed}')"),
                nbformat.v4.new_code_cell("print('never reached')")]
    nbformat.write(nb, notebook)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "boom.py").write_text(
        "from datetime import datetime, timezone\nfrom airflow.sdk import DAG\n"
        "from obslab.schedule.tasks import NotebookOperator\n"
        "with DAG(dag_id='boom', schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False,\n"
        "         default_args={'retries': 0}):\n"
        f"    NotebookOperator(task_id='boom', notebook={str(notebook)!r})\n")
    done = run_dag(settings, "boom", dags=dags, timeout=300)
    assert done.returncode != 0
    assert "planted failure, seed 42" in done.stdout  # seed came from the settings, through the parameters
    assert "NotebookTaskError" in done.stdout and "is kept at" in done.stdout
    kept = next((settings.data_dir / "runs" / "boom").glob("*/boom.ipynb"))
    cells = [c for c in json.loads(kept.read_text())["cells"] if c["cell_type"] == "code"]
    failing = next(c for c in cells if "raise RuntimeError" in "".join(c["source"]))
    errors = [o for o in failing["outputs"] if o["output_type"] == "error"]
    assert errors and errors[0]["evalue"] == "planted failure, seed 42"
    assert not any(o.get("text") == "never reached\n" for c in cells for o in c.get("outputs", []))
    row = Store.from_settings(settings).query("SELECT status, error, output_notebook FROM pipeline_runs")
    assert row == [("failed", "RuntimeError: planted failure, seed 42", str(kept))]


def _post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def _dag_ids(base: str, token: str) -> list[str]:
    request = urllib.request.Request(f"{base}/api/v2/dags", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return sorted(d["dag_id"] for d in json.loads(response.read())["dags"])


def _listening(pids: list[int]) -> set[tuple[str, int]]:
    import psutil

    found = set()
    for pid in pids:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                found |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet") if c.status == "LISTEN"}
            except psutil.NoSuchProcess:
                pass
    return found


def _other_addresses() -> list[str]:
    import socket

    import psutil

    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def test_make_airflow_is_loopback_only_with_a_generated_password(broker, lab_settings, tmp_path):
    import socket

    import psutil

    settings = _lab(tmp_path, lab_settings, "afsmoke")
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "AIRFLOW_PORT": str(settings.airflow_port),
           "KAFKA_PORT": str(settings.kafka_port), "KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port)}
    base = server.url(settings)
    started = subprocess.run(["make", "-C", str(ROOT), "airflow"], env=env, capture_output=True, text=True, timeout=600)
    pids = [p.pid for p in server.status(settings)]
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert str(server.password_file(settings)) in started.stdout and "127.0.0.1" in started.stdout
        # every socket Airflow listens on is on the loopback interface, the UI's among them
        listening = _listening(pids)
        assert ("127.0.0.1", settings.airflow_port) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        for address in _other_addresses():  # and the UI's port is closed on every other interface
            with socket.socket() as sock, pytest.raises(OSError):
                sock.settimeout(3)
                sock.connect((address, settings.airflow_port))
        with urllib.request.urlopen(base, timeout=30) as response:
            assert response.status == 200
        # the generated password logs in; admin/admin does not
        password = server.password(settings)
        assert password and password != "admin"
        assert _post_json(f"{base}/auth/token", {"username": "admin", "password": "admin"})[0] == 401
        status, body = _post_json(f"{base}/auth/token", {"username": "admin", "password": password})
        assert status == 201 and body["access_token"]
        token = body["access_token"]
        deadline, dags = time.monotonic() + 180, []
        while time.monotonic() < deadline and len(dags) < 3:
            dags = _dag_ids(base, token)
            time.sleep(2)
        assert dags == ["data_quality_dag", "monitoring_dag", "obslab_pipeline"]
        _screenshot(base, token, ROOT / "data" / "screenshots" / "airflow-dags.png")
    finally:
        stopped = subprocess.run(["make", "-C", str(ROOT), "stop"], env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []  # `make stop` stopped Airflow too


def _screenshot(base: str, token: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from obslab.bootstrap import chromium_binary

    browser_path = chromium_binary()
    assert browser_path, "chromium is not installed: run `make setup` (step `browser`)"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                           "--disable-component-update", "--no-first-run"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "_token", "value": token, "url": base}])
        page = context.new_page()
        page.goto(f"{base}/dags")
        page.get_by_text("obslab_pipeline").first.wait_for(timeout=90_000)
        page.get_by_text("monitoring_dag").first.wait_for(timeout=30_000)
        page.screenshot(path=str(path), full_page=True)
        browser.close()
    assert path.stat().st_size > 10_000


def test_monitoring_passes_on_a_healthy_lab(pipeline_lab):
    settings, done, _ = pipeline_lab
    assert done.returncode == 0
    run = run_dag(settings, "monitoring_dag")
    assert run.returncode == 0, run.stdout[-5000:]
    checks = Store.from_settings(settings).query("SELECT check_name, ok, message FROM health_checks")
    assert {c[0] for c in checks} == {"broker", "stream_lag", "freshness", "dead_letters", "detector", "narrator",
                                      "narrator_backend"}
    assert [c for c in checks if not c[1]] == []


def test_monitoring_fails_at_once_when_the_broker_is_down(pipeline_lab):
    settings, done, _ = pipeline_lab
    closed = free_port()  # nothing listens here: what clients of a stopped broker see
    began = time.monotonic()
    run = run_dag(settings, "monitoring_dag", extra_env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}"})
    seconds = time.monotonic() - began
    assert run.returncode != 0
    assert "HealthCheckFailed" in run.stdout and f"127.0.0.1:{closed}" in run.stdout
    assert "try_number=2" not in run.stdout.replace(" ", "")  # no retry: the alarm is not delayed
    rows = dict(Store.from_settings(settings).query(
        "SELECT check_name, ok FROM health_checks WHERE run_id = (SELECT arg_max(run_id, checked_at) FROM health_checks)"))
    assert rows["broker"] is False and rows["stream_lag"] is False  # lag cannot be measured without the broker
    kept = max((settings.data_dir / "runs" / "monitoring_dag").glob("*/checks.ipynb"), key=lambda p: p.stat().st_mtime)
    last = [c for c in json.loads(kept.read_text())["cells"] if c["cell_type"] == "code"][-1]
    assert "assert_healthy" in "".join(last["source"])
    assert [o["ename"] for o in last["outputs"] if o["output_type"] == "error"] == ["HealthCheckFailed"]
    print(f"monitoring_dag failed in {seconds:.0f} s")


def test_data_quality_passes_and_deletes_exactly_the_rows_older_than_the_bound(pipeline_lab):
    settings, done, _ = pipeline_lab
    assert done.returncode == 0
    store = Store.from_settings(settings)
    cutoff = datetime.now(timezone.utc) - timedelta(days=settings.retention_days)
    old, new = cutoff - timedelta(hours=1), cutoff + timedelta(hours=1)  # one on each side of the bound
    start = old.replace(second=0, microsecond=0) - timedelta(minutes=2)
    window = dict(window_start=start, window_end=start + timedelta(minutes=1), request_count=10, error_count=1,
                  error_rate=0.1, avg_latency_ms=100.0, p50_latency_ms=90.0, p95_latency_ms=150.0,
                  p99_latency_ms=190.0, is_final=True, updated_at=start)
    metrics_before = store.count("service_metrics")
    store.upsert_many({
        "service_metrics": [{"service": "payments", **window}],
        "endpoint_metrics": [{"service": "payments", "endpoint": "/api/pay", **window, "latency_sum_ms": 1000.0}],
        "dead_letter_events": [{"topic": "t", "kafka_partition": 0, "kafka_offset": i, "raw_payload": "x",
                                "reason": "malformed_json", "received_at": at} for i, at in enumerate((old, new))],
        "pipeline_runs": [{"run_id": f"cli/{name}", "stage": "detect", "status": "ok", "started_at": at}
                          for name, at in (("old", old), ("new", new))],
    })
    run = run_dag(settings, "data_quality_dag")
    assert run.returncode == 0, run.stdout[-5000:]
    assert store.count("service_metrics") == metrics_before  # the old window went, every recent one stayed
    assert store.query("SELECT count(*) FROM endpoint_metrics WHERE window_start = ?", [start]) == [(0,)]
    assert store.query("SELECT kafka_offset FROM dead_letter_events WHERE topic = 't'") == [(1,)]
    assert store.query("SELECT run_id FROM pipeline_runs WHERE run_id LIKE 'cli/%'") == [("cli/new",)]
    rules = store.query("SELECT check_name, ok FROM quality_checks")
    assert len(rules) == 8 and all(ok for _, ok in rules)
