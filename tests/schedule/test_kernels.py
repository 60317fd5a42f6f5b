"""The kernel zygote: notebooks run through papermill in kernels it forks, each new, in the task's folder
and environment, gone when the notebook ends or its task does; without a zygote a kernel starts as before."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import pytest

from obslab.schedule import kernels
from obslab.schedule.tasks import KERNEL
from obslab.zygote import ZygoteError, ask, running

ROOT = Path(__file__).resolve().parents[2]


def _wait(check, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def zygote(tmp_path):
    """A zygote on a socket in tmp_path (no warm-up: the kernels import what they use themselves)."""
    path = tmp_path / "kernels.sock"
    log = (tmp_path / "zygote.log").open("w")
    code = ("import sys; from pathlib import Path; from obslab.schedule.kernels import serve_kernels; "
            "serve_kernels(Path(sys.argv[1]), warm=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait(lambda: path.exists() or proc.poll() is not None, what="the zygote's socket")
        assert proc.poll() is None, (tmp_path / "zygote.log").read_text()
        yield path, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _notebook(tmp_path: Path, name: str, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": KERNEL, "language": "python"}
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _run(source: Path, cwd: Path, zygote_path: Path, parameters: dict | None = None) -> dict:
    """Run a notebook whose last cell prints a JSON object; returns that object."""
    out = source.with_name(source.stem + "-out.ipynb")
    nb = papermill.execute_notebook(str(source), str(out), parameters=parameters or {}, kernel_name=KERNEL,
                                    cwd=str(cwd), progress_bar=False, shutdown_kernel="immediate",
                                    kernel_manager_class=kernels.manager_for(zygote_path))
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


REPORT = ("import json, os\n"
          "print(json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'cwd': os.getcwd(),\n"
          "                  'env': os.environ.get('OBSLAB_TEST_MARK'), 'marker': 'marker' in globals()}))")


def test_a_notebook_runs_in_a_kernel_the_zygote_forks_new_each_time(zygote, tmp_path, monkeypatch):
    path, proc = zygote
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("OBSLAB_TEST_MARK", "first task")
    first = _run(_notebook(tmp_path, "one", "marker = 1", REPORT), work, path)
    assert first["ppid"] == proc.pid  # forked by the zygote, not started by this process
    assert first["cwd"] == str(work) and first["env"] == "first task" and first["marker"] is True
    monkeypatch.setenv("OBSLAB_TEST_MARK", "second task")
    second = _run(_notebook(tmp_path, "two", REPORT), work, path)
    assert second["ppid"] == proc.pid and second["pid"] != first["pid"]
    assert second["env"] == "second task" and second["marker"] is False  # nothing of the first run is left
    for pid in (first["pid"], second["pid"]):  # each kernel was stopped when its notebook ended
        _wait(lambda pid=pid: not running(pid), what=f"kernel {pid} to end")


def test_a_failing_cell_fails_the_run_as_with_a_usual_kernel(zygote, tmp_path):
    path, _ = zygote
    source = _notebook(tmp_path, "bad", "raise ValueError('the cell says no')")
    with pytest.raises(papermill.PapermillExecutionError, match="the cell says no"):
        papermill.execute_notebook(str(source), str(tmp_path / "bad-out.ipynb"), kernel_name=KERNEL, cwd=str(tmp_path),
                                   progress_bar=False, shutdown_kernel="immediate",
                                   kernel_manager_class=kernels.manager_for(path))


def test_without_a_zygote_the_kernel_starts_the_usual_way(tmp_path):
    missing = tmp_path / "no-zygote.sock"
    report = _run(_notebook(tmp_path, "plain", REPORT), tmp_path, missing)
    assert report["ppid"] == os.getpid() and report["cwd"] == str(tmp_path)


def test_a_kernel_ends_when_the_task_that_asked_for_it_is_gone(zygote, tmp_path):
    path, _ = zygote
    conn = tmp_path / "kernel.json"
    from jupyter_client.connect import write_connection_file

    write_connection_file(str(conn), ip="127.0.0.1")
    code = ("import sys; from pathlib import Path; from obslab.zygote import ask; "
            "print(ask(Path(sys.argv[1]), {'connection_file': sys.argv[2], 'cwd': sys.argv[3]}))")
    asked = subprocess.run([sys.executable, "-c", code, str(path), str(conn), str(tmp_path)], capture_output=True,
                           text=True, cwd=ROOT, timeout=60)
    assert asked.returncode == 0, asked.stderr
    pid = int(asked.stdout.strip())
    _wait(lambda: not running(pid), what=f"kernel {pid} to end after its task")


def test_the_zygote_answers_a_bad_request_with_an_error_and_goes_on(zygote, tmp_path):
    path, proc = zygote
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(b'{"cwd": "/"}\n')
        answer = json.loads(conn.recv(4096))
    assert "bad request" in answer["error"] and "connection_file" in answer["error"]
    assert proc.poll() is None
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # only this user may ask for a kernel
    report = _run(_notebook(tmp_path, "after", REPORT), tmp_path, path)
    assert report["ppid"] == proc.pid


def test_asking_where_no_zygote_listens_says_where_it_looked(tmp_path):
    with pytest.raises(ZygoteError, match="no-such.sock"):
        ask(tmp_path / "no-such.sock", {"connection_file": str(tmp_path / "k.json"), "cwd": str(tmp_path)})


def test_a_forked_kernel_seen_from_the_task_is_gone_once_its_process_is():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    seen = kernels.ForkedKernel(proc.pid)
    assert seen.poll() is None
    seen.kill()
    proc.wait(timeout=10)  # collected here, as the zygote collects its kernels
    assert seen.poll() is not None and seen.wait(timeout=1) is not None
