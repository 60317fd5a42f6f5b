"""The demo's supervisor and its run records: a stage that dies is restarted, a bounded number of times,
and `obslab status` says so; how a run ended, in words."""

import os
import signal
import sys
import time
from datetime import datetime, timezone

import pytest

from obslab import demo
from obslab.health import last_beat
from obslab.settings import load_settings
from obslab.supervisor import MAX_RESTARTS, ProcessInfo, Supervisor, describe_exit, last_error, run_dir, spawn


@pytest.mark.parametrize("ended, said", [
    ({"code": 1, "at": "T", "error": "error: bad"}, "exited with code 1 at T: error: bad"),  # the error it wrote
    ({"code": 2, "at": "T", "error": ""}, "exited with code 2 at T"),  # it wrote none
    ({"code": -9, "at": "T"}, "was killed by SIGKILL at T"),  # a signal, by name
    ({"code": -200, "at": "T"}, "was killed by signal 200 at T"),  # a number no signal has
])
def test_how_a_run_ended_in_words(ended, said):
    assert describe_exit(ended) == said


def test_the_last_error_is_the_last_error_line_after_the_offset(tmp_path):
    log = tmp_path / "detect.log"
    log.write_text("error: an earlier run's\n")
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write("starting\nTraceback (most recent call last):\n  File x\nValueError: a bug\nshutting down\n")
    assert last_error(log, offset) == "ValueError: a bug"  # a traceback's last line, not the later line
    assert last_error(log) == "ValueError: a bug"  # the newest error line of the whole log
    assert last_error(tmp_path / "absent.log") == ""  # no log: nothing to say


@pytest.mark.parametrize("running, code, gave_up, state", [
    (True, None, False, "running"),
    (False, None, False, "exited"),  # no demo saw it end
    (False, 0, False, "finished"),
    (False, -signal.SIGTERM, False, "stopped"),  # `obslab demo-stop`
    (False, 1, False, "restarting"),
    (False, 1, True, "gave up"),
])
def test_a_recorded_process_s_state(tmp_path, running, code, gave_up, state):
    last_exit = None if code is None else {"pid": 42, "code": code, "at": "T"}
    info = ProcessInfo("detect", 42, [], tmp_path / "detect.log", running, "", last_exit=last_exit, gave_up=gave_up)
    assert info.state == state


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
    supervisor = Supervisor(settings, [spawn(settings, "detect", DETECT, env)], demo.RESTARTED, max_restarts=2, pause_s=0)
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
    supervisor = Supervisor(settings, [spawn(settings, "detect", DETECT, env)], demo.RESTARTED, max_restarts=1, pause_s=0,
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
    supervisor = Supervisor(settings, [spawn(settings, "detect", DETECT, env)], demo.RESTARTED, pause_s=0)
    blocker = run_dir(settings) / "detect.tmp"
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
    first = spawn(settings, "detect", DETECT, env)
    supervisor = Supervisor(settings, [first], demo.RESTARTED, pause_s=0)
    try:
        os.killpg(first.pid, signal.SIGKILL)  # what the kernel's OOM killer does
        said = _supervise(supervisor, lambda said: any(m.startswith("detect restarted") for m in said))
        restarted_at = datetime.now(timezone.utc)
        assert said[0].startswith("detect was killed by SIGKILL at ")
        assert said[0].endswith(f"; restarting in 0 s (1 of {MAX_RESTARTS})")
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
