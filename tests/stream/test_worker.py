"""The launcher the lab's Spark server runs its Python workers through (`obslab.stream.worker`)."""

import os
import socket
import struct
import subprocess

from obslab.stream.worker import FOREACH_BATCH_WORKER, launcher


def test_any_other_worker_runs_as_spark_asked(tmp_path):
    out = subprocess.run([str(launcher(tmp_path)), "-c", "import sys; print(sys.argv[1:], 'ran')", "a b"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['a b'] ran"


def test_the_sink_worker_connects_back_and_says_its_pid_before_it_is_sent_anything(tmp_path):
    """Spark's side of the handshake: accept, read the secret, answer "ok", read the worker's pid. The
    worker must get there on its own; Spark sends the rest (and waits minutes for it) only afterwards."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(120)  # a bound for a broken launcher, not a speed check
    secret = "s3cret"
    env = {**os.environ, "PYTHON_WORKER_FACTORY_PORT": str(server.getsockname()[1]),
           "PYTHON_WORKER_FACTORY_SECRET": secret}
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
        assert pid == worker.pid  # the process Spark started is the one that connected (sh exec'd into Python)
        conn.close()
    finally:
        worker.kill()
        worker.wait(timeout=30)
        server.close()
