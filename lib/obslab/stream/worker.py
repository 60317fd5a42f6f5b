"""The Python the lab's Spark server starts for the sink: it connects back to Spark first, imports after.

On a Spark Connect server, each streaming query's `foreachBatch` function runs in a Python worker the
server starts (`python -m pyspark.sql.connect.streaming.worker.foreach_batch_worker`). Spark waits a
fixed 10 s for the worker to connect back, and that module imports pyspark's Connect client, pandas and
pyarrow before it connects: 3-4 s on an idle machine here, more than 10 s under load, when the query
fails to start ("Python worker failed to connect back").

The server runs its Python workers through `launcher` (PYSPARK_PYTHON), which runs this module. For
the sink's worker it connects back with pyspark's own small helper (about 0.4 s of imports), then
imports the worker module and runs its `main`; once connected, Spark waits 5 minutes for the rest.
Any other worker Spark asks for is run unchanged, as Spark asked, but for one: Spark's Python daemon.

With the lab's server the sink's worker is not even started: the server runs a zygote beside it
(`python -m obslab.stream.worker --zygote PATH --watch SERVER_PID`, see obslab.zygote) that has
pyspark's Connect client, pandas, pyarrow, DuckDB and the sink imported. The launcher, named by
WORKER_ZYGOTE in its environment, asks it for a fork with its own stdin, stdout, stderr and
environment, and waits for that child; the child connects back to Spark and runs the worker. When no
zygote answers the launcher runs the worker itself, as above. The zygote ends with the server.

Spark's Python daemon (`-m pyspark.daemon`) forks the workers of Python UDFs, such as the stream's fast
path (obslab.stream.fastpath). A Connect server starts one daemon per client session and, in Spark 4.2,
never stops it (SPARK-54055): ~47 MB left behind by every `obslab stream`, notebook or scheduled task.
So the launcher asks the zygote for the daemon too (its workers then start with pyarrow, DuckDB and the
fast path imported: each session's first tasks save ~1 s of imports per worker), and it ends the daemon
once it has had no worker for DAEMON_IDLE_SECONDS. Spark starts a session's daemon again when it next
needs one (it retries a daemon that does not answer), so that costs only the restart. Without a zygote
the launcher runs the daemon as a child process, with the same idle end.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

FOREACH_BATCH_WORKER = "pyspark.sql.connect.streaming.worker.foreach_batch_worker"
WORKER_ZYGOTE = "OBSLAB_WORKER_ZYGOTE"  # the environment variable naming the zygote's socket
DAEMON = "pyspark.daemon"
# What the sink's worker imports (the worker module itself, and the sink unpickled in it), and what the workers
# of Spark's daemon import (the UDF worker, and the fast path's function and libraries).
WARM = ("pyspark.worker_util", FOREACH_BATCH_WORKER, "pandas", "pyarrow", "duckdb", "obslab.stream.sink",
        "obslab.stream.transform", "obslab.store", DAEMON, "pyspark.worker", "pyarrow.compute",
        "obslab.stream.fastpath")
DAEMON_IDLE_SECONDS = 60.0  # a daemon without a worker this long ends (Spark starts it again on demand)
DAEMON_IDLE_ENV = "OBSLAB_DAEMON_IDLE_SECONDS"  # another bound, in the server's environment (the tests' short one)


def zygote_path(folder: Path) -> Path:
    """Where the Spark server's worker zygote listens (in the server's folder)."""
    return folder / "workers.sock"


def launcher(folder: Path) -> Path:
    """An executable in `folder` that runs this module with the lab's Python: the server's PYSPARK_PYTHON."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "python-worker"
    path.write_text(f"#!/bin/sh\nexec '{sys.executable}' -m obslab.stream.worker \"$@\"\n")
    path.chmod(0o755)
    return path


def main(argv: list[str]) -> None:
    if argv[:1] == ["--zygote"]:
        serve_workers(argv[1:])
        return
    zygote = os.environ.get(WORKER_ZYGOTE)
    if argv[:2] == ["-m", DAEMON]:
        run_daemon_until_idle(argv[2:], Path(zygote) if zygote else None)
        return
    if argv != ["-m", FOREACH_BATCH_WORKER]:
        os.execv(sys.executable, [sys.executable, *argv])  # not the sink's worker: as Spark asked
    if zygote and forked(Path(zygote)):
        return
    run_worker()


def become(request: dict) -> None:
    """In a child of the zygote: Spark's daemon when asked for it, else the sink's worker."""
    if request.get("daemon_args") is not None:
        run_daemon(list(request["daemon_args"]))
    else:
        run_worker()


def run_daemon(args: list[str]) -> None:
    """Spark's Python daemon in this process (its workers are forked from it)."""
    from pyspark import daemon

    sys.argv = [daemon.__file__, *args]
    own_group = os.setpgid

    def setpgid(pid: int, group: int) -> None:
        # The daemon makes itself a process group to end its workers with; a child of the zygote leads its own
        # session, and so its own group, already (and may not change it: EPERM).
        if (pid, group) == (0, 0) and os.getpgid(0) == os.getpid():
            return
        own_group(pid, group)

    os.setpgid = setpgid
    daemon.manager()


def run_daemon_until_idle(args: list[str], zygote: Path | None) -> None:
    """The daemon, forked by the zygote (or else started here), ended after DAEMON_IDLE_SECONDS without a worker."""
    import subprocess

    from obslab.zygote import running

    pid = _zygote_child(zygote, {"daemon_args": args}, "starting Spark's daemon here") if zygote else None
    child = None
    if pid is None:
        child = subprocess.Popen([sys.executable, "-m", DAEMON, *args])
        pid = child.pid
        _pass_signals_on(pid)
    idle_limit = float(os.environ.get(DAEMON_IDLE_ENV, DAEMON_IDLE_SECONDS))
    idle_since = time.monotonic()
    while (child.poll() is None) if child is not None else running(pid):
        time.sleep(1.0)
        if has_children(pid):
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= idle_limit:
            print(f"obslab worker: Spark's daemon {pid} had no worker for {idle_limit:.0f} s: ending it",
                  file=sys.stderr, flush=True)
            _signal(pid, signal.SIGTERM)
            return


def has_children(pid: int) -> bool:
    """True when process `pid` has a child process now (True when that cannot be read: never end it blindly)."""
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return True


def run_worker(request: dict | None = None) -> None:
    """The sink's worker: connect back to Spark, then import the worker module and run it."""
    from pyspark.worker_util import get_sock_file_to_executor

    with get_sock_file_to_executor(timeout=None) as sock_file:
        from pyspark.sql.connect.streaming.worker import foreach_batch_worker

        foreach_batch_worker.main(sock_file, sock_file)


def forked(zygote: Path) -> bool:
    """Have the zygote fork the worker with this process's stdio and environment, and wait for it to end
    (passing on SIGTERM and SIGINT); False when no zygote answers (said on stderr)."""
    from obslab.zygote import wait_for

    pid = _zygote_child(zygote, {}, "running the worker in this process")
    if pid is None:
        return False
    wait_for(pid)
    return True


def _zygote_child(zygote: Path, request: dict, otherwise: str) -> int | None:
    """The pid of a child the zygote forked with this process's stdio, environment and folder (and `request`'s
    other keys), SIGTERM and SIGINT passed on to it; None when no zygote answers (said on stderr, with what
    happens `otherwise`)."""
    from obslab.zygote import ZygoteError, ask

    try:
        pid = ask(zygote, {"env": dict(os.environ), "cwd": os.getcwd(), **request}, fds=[0, 1, 2])
    except ZygoteError as err:
        print(f"obslab worker: {err}; {otherwise}", file=sys.stderr, flush=True)
        return None
    _pass_signals_on(pid)
    return pid


def _pass_signals_on(pid: int) -> None:
    """SIGTERM or SIGINT to this process goes on to `pid`, and this process then ends."""
    def pass_on(signum, _frame):
        _signal(pid, signum)
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pass_on)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it has ended already


def serve_workers(argv: list[str]) -> None:
    """`--zygote PATH [--watch PID]`: the worker zygote, ending when process PID (the server) does."""
    from obslab.zygote import preload, serve

    path = Path(argv[0])
    watch = int(argv[argv.index("--watch") + 1]) if "--watch" in argv else None
    serve(path, become, warm=lambda: preload(WARM), watch=watch, name="spark-workers")


if __name__ == "__main__":
    main(sys.argv[1:])
