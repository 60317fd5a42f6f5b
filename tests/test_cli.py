"""The long-running stages (`obslab detect`, `obslab narrate`) in a long run: they outlive a locked
store and an unreachable broker, say so in their heartbeat, and take no write lock on a pass with
nothing to write. Real processes, a real DuckDB file held open by another real process, a real
Kafka client with no broker to reach."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import free_port
from obslab.errors import ConfigError, StoreLockedError
from obslab.health import heartbeat_path, last_beat
from obslab.settings import Settings, load_settings
from obslab.store import Store

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
WAIT_S = 120  # a bound for the processes to get somewhere on a busy machine, not a measurement


def _lab(tmp_path) -> tuple[Settings, Store, dict]:
    """A lab in tmp_path with a migrated store of steady windows, and the environment its processes get."""
    settings = load_settings(data_dir=tmp_path, duckdb_path=tmp_path / "observability.duckdb",
                             kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    store = Store.from_settings(settings)
    store.migrate()
    rows = [{"service": service, "window_start": T0 + timedelta(minutes=m), "window_end": T0 + timedelta(minutes=m + 1),
             "request_count": 600, "error_count": 6, "error_rate": 0.01, "avg_latency_ms": 80.0,
             "p50_latency_ms": 70.0, "p95_latency_ms": 120.0, "p99_latency_ms": 150.0, "is_final": True,
             "updated_at": T0} for service in ("checkout", "search") for m in range(20)]
    store.upsert("service_metrics", rows)
    env = {**os.environ, "DATA_DIR": str(tmp_path), "DUCKDB_PATH": str(settings.duckdb_path), "STORE_LOCK_TIMEOUT_SECONDS": "1",
           "DETECT_POLL_SECONDS": "0.2", "NARRATE_POLL_SECONDS": "0.2", "NARRATOR_BACKEND": "template",
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    return settings, store, env


def _stage(name: str, env: dict, log) -> subprocess.Popen:
    extra = ["--no-publish"] if name == "detect" else []
    return subprocess.Popen([sys.executable, "-m", "obslab.cli", name, *extra], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _holder(path, read_only: bool) -> subprocess.Popen:
    """Another process that keeps the DuckDB file open until its stdin closes."""
    # The stage may hold the file for a moment when the holder starts: retry the open, as a user would.
    proc = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time\n"
        "for attempt in range(600):\n"
        "    try:\n"
        "        con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'ro'); break\n"
        "    except duckdb.IOException:\n"
        "        time.sleep(0.05)\n"
        "print('open', flush=True); sys.stdin.read(); con.close()"), str(path), "ro" if read_only else "rw"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    return proc


def _release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    holder.wait(timeout=60)


def _wait_for(what: str, condition, proc: subprocess.Popen, log_path) -> None:
    """Wait until condition() holds; fail at once when the stage process has ended."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the stage exited (code {proc.returncode}) while waiting for {what}:\n"
                        + log_path.read_text()[-3000:])
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT_S} s:\n" + log_path.read_text()[-3000:])
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["detect", "narrate"])
def test_a_stage_outlives_a_store_another_process_holds_and_says_so(tmp_path, stage):
    settings, store, env = _lab(tmp_path)
    log_path = tmp_path / f"{stage}.log"
    with log_path.open("w") as log:
        proc = _stage(stage, env, log)
    try:
        _wait_for("first run", lambda: (b := last_beat(settings, stage)) is not None and b.ok, proc, log_path)
        holder = _holder(store.path, read_only=False)  # a writer shuts out readers and writers alike
        try:
            # Before, the stage exited here with StoreLockedError after STORE_LOCK_TIMEOUT_SECONDS.
            _wait_for("failed run", lambda: not last_beat(settings, stage).ok, proc, log_path)
            failed = last_beat(settings, stage)
        finally:
            _release(holder)
        assert failed.detail.startswith("StoreLockedError: ") and failed.last_ok_at is not None
        _wait_for("run after the store was released", lambda: last_beat(settings, stage).ok, proc, log_path)
        recovered = last_beat(settings, stage)
        # the failure stays on record beside the newer success (what `obslab status` shows)
        assert (recovered.last_error_at, recovered.last_error) == (failed.at, failed.detail)
        assert recovered.last_ok_at == recovered.at > failed.at
    finally:
        code = _stop(proc)
    assert code == 0  # SIGTERM ends the loop cleanly
    assert "retrying in" in log_path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["detect", "narrate"])
def test_a_pass_with_nothing_new_takes_no_write_lock(tmp_path, stage):
    settings, store, env = _lab(tmp_path)
    log_path = tmp_path / f"{stage}.log"
    with log_path.open("w") as log:
        proc = _stage(stage, env, log)
    try:
        _wait_for("first run", lambda: (b := last_beat(settings, stage)) is not None and b.ok, proc, log_path)
        # DuckDB: one writer or many readers. While this reader holds the file, a pass that opened it
        # read-write (migrating, rewriting the same anomalies) would fail; a read-only pass goes through.
        holder = _holder(store.path, read_only=True)
        opened = datetime.now(timezone.utc)
        try:
            beats = []

            def two_passes_while_held() -> bool:
                b = last_beat(settings, stage)
                if b.at > opened and b not in beats:
                    beats.append(b)
                return len(beats) >= 2  # the second pass began after the reader had the file

            _wait_for("two passes while another process reads", two_passes_while_held, proc, log_path)
        finally:
            _release(holder)
        assert all(b.ok for b in beats), beats
        assert all(b.last_error_at is None for b in beats), beats  # no pass failed and was retried
    finally:
        assert _stop(proc) == 0


def test_migrating_a_current_store_takes_no_write_lock(tmp_path):
    # Every detection and narration pass migrates first; that alone used to take the write lock.
    store = Store(tmp_path / "s.duckdb", lock_timeout_s=1.0)
    assert store.migrate()  # a new file: created, under the write lock
    holder = _holder(store.path, read_only=True)
    try:
        assert store.migrate() == []  # current: read-only check, no StoreLockedError while another reads
    finally:
        _release(holder)


# ---------------------------------------------------------------------- the loop itself


def _loop(settings, step, stop, once=False):
    from obslab.retry import repeat_stage

    repeat_stage(step, "detect", settings, once=once, poll_seconds=0.01, stop=stop, max_backoff_s=0.05)


def test_an_unreachable_broker_is_retried_with_backoff_not_fatal(tmp_path):
    from obslab.broker import producer

    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")  # nobody listens
    stop, calls = threading.Event(), []

    def publish() -> None:
        calls.append(datetime.now(timezone.utc))
        if len(calls) == 3:
            stop.set()  # enough: the loop has outlived two failures
        producer(settings, bootstrap_timeout_ms=300)  # the real client fails to bootstrap

    _loop(settings, publish, stop)  # before: the Kafka error ended the stage
    assert len(calls) == 3
    beat = last_beat(settings, "detect")
    assert not beat.ok and beat.detail.startswith("KafkaTimeoutError: ") and beat.last_ok_at is None


@pytest.mark.parametrize(
    "error, once",
    [
        (ConfigError("a bad setting"), False),  # not transient: waiting does not fix a setting
        (ValueError("a bug"), False),  # an unexpected error ends the stage (the demo restarts it)
        (StoreLockedError("/x.duckdb", 1.0, None), True),  # --once (a scheduled task): its scheduler retries
    ],
)
def test_what_waiting_does_not_fix_ends_the_stage_and_is_recorded(tmp_path, error, once):
    settings = Settings(data_dir=tmp_path)
    calls = []

    def step() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        _loop(settings, step, threading.Event(), once=once)
    assert len(calls) == 1
    beat = last_beat(settings, "detect")
    assert not beat.ok and beat.detail == f"{type(error).__name__}: {error}".splitlines()[0]
    assert heartbeat_path(settings, "detect").exists()


# ---------------------------------------------------------------------- wiring

def test_every_option_that_reads_a_setting_is_that_setting():
    # Options are made from Settings fields: an option reading NAME has that field's help text, so
    # the CLI cannot drift from the settings (a retyped help or a misspelt env var fails here).
    import typer.main

    from obslab.cli import app

    group = typer.main.get_command(app)
    seen = 0

    def walk(command):
        nonlocal seen
        for sub in getattr(command, "commands", {}).values():
            walk(sub)
        for param in command.params:
            if param.envvar:
                field = Settings.model_fields.get(param.envvar.lower())
                assert field is not None, f"{command.name} --{param.name}: {param.envvar} is no setting"
                assert param.help == field.description, f"{command.name} --{param.name}"
                seen += 1

    walk(group)
    assert seen >= 20  # generate, stream, detect, narrate, quality, health, broker, airflow


def test_a_stop_signal_sets_the_event_and_the_previous_handler_comes_back():
    from obslab.cli import stop_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)  # delivered to this (main) thread: the handler ran, the process lives
    assert signal.getsignal(signal.SIGTERM) is before


def test_detect_for_polls_through_the_stage_loop_until_its_time_is_up(tmp_path):
    from obslab.detect.run import detect_for

    settings, store, _ = _lab(tmp_path)
    settings = settings.model_copy(update={"detect_poll_seconds": 0.2})
    report = detect_for(store, settings, 0)  # once
    assert report.windows == 40 and report.anomalies == 0
    began = time.monotonic()
    assert detect_for(store, settings, 1.0).windows == 40
    assert time.monotonic() - began >= 1.0  # it kept polling until the deadline, not a single run
    assert last_beat(settings, "detect").ok
