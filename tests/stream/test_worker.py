"""The launcher the lab's Spark server runs its Python workers through (`obslab.stream.worker`)."""

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obslab.stream.worker import FOREACH_BATCH_WORKER, WORKER_ZYGOTE, launcher
from obslab.zygote import running

ROOT = Path(__file__).resolve().parents[2]


def test_any_other_worker_runs_as_spark_asked(tmp_path):
    out = subprocess.run([str(launcher(tmp_path)), "-c", "import sys; print(sys.argv[1:], 'ran')", "a b"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['a b'] ran"


def _handshake(tmp_path, zygote: Path | None = None) -> tuple[int, int, subprocess.Popen]:
    """Spark's side of the handshake: accept, read the secret, answer "ok", read the worker's pid. The
    worker must get there on its own; Spark sends the rest (and waits minutes for it) only afterwards.
    Returns the pid the worker said, its parent's pid, and the launcher's process (killed)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(120)  # a bound for a broken launcher, not a speed check
    secret = "s3cret"
    env = {**os.environ, "PYTHON_WORKER_FACTORY_PORT": str(server.getsockname()[1]),
           "PYTHON_WORKER_FACTORY_SECRET": secret}
    env.pop(WORKER_ZYGOTE, None)
    if zygote is not None:
        env[WORKER_ZYGOTE] = str(zygote)
    worker = subprocess.Popen([str(launcher(tmp_path)), "-m", FOREACH_BATCH_WORKER], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn, _ = server.accept()
        conn.settimeout(120)
        f = conn.makefile("rwb")
        (length,) = struct.unpack("!i", f.read(4))
        assert f.read(length).decode() == secret
        reply = b"ok"
        f.write(struct.pack("!i", len(reply)) + reply)
        f.flush()
        (pid,) = struct.unpack("!i", f.read(4))
        with open(f"/proc/{pid}/stat") as stat:  # it waits for Spark's next message: alive
            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        conn.close()
    finally:
        worker.kill()
        worker.wait(timeout=30)
        server.close()
    return pid, parent, worker


def test_the_sink_worker_connects_back_and_says_its_pid_before_it_is_sent_anything(tmp_path):
    pid, _, worker = _handshake(tmp_path)
    assert pid == worker.pid  # the process Spark started is the one that connected (sh exec'd into Python)


def test_with_no_zygote_answering_the_launcher_runs_the_worker_itself(tmp_path):
    pid, _, worker = _handshake(tmp_path, zygote=tmp_path / "nobody.sock")
    assert pid == worker.pid


@pytest.fixture
def worker_zygote(tmp_path):
    path = tmp_path / "workers.sock"
    log = (tmp_path / "zygote.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "obslab.stream.worker", "--zygote", str(path)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), (tmp_path / "zygote.log").read_text()
    yield path, proc
    proc.terminate()
    proc.wait(timeout=30)


def test_the_sink_worker_is_forked_by_the_zygote_and_ends_with_its_launcher(tmp_path, worker_zygote):
    path, zygote = worker_zygote
    pid, parent, _ = _handshake(tmp_path, zygote=path)
    assert parent == zygote.pid  # the worker that connected back is the zygote's child
    deadline = time.monotonic() + 60  # its launcher was killed: the worker goes too
    while running(pid):
        assert time.monotonic() < deadline, f"worker {pid} outlived its launcher"
        time.sleep(0.1)


def test_has_children_sees_a_process_s_children_and_never_guesses_idle():
    from obslab.stream.worker import has_children

    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)']); "
                               "c.wait(); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while not has_children(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert has_children(parent.pid)  # its child runs
        deadline = time.monotonic() + 20
        while has_children(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not has_children(parent.pid)  # its child ended: idle
    finally:
        parent.kill()
        parent.wait()
    assert has_children(2**22 + 12345)  # no such process: unknown, so not idle
