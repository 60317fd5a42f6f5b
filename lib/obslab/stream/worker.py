"""The Python the lab's Spark server starts for the sink: it connects back to Spark first, imports after.

On a Spark Connect server, each streaming query's `foreachBatch` function runs in a Python worker the
server starts (`python -m pyspark.sql.connect.streaming.worker.foreach_batch_worker`). Spark waits a
fixed 10 s for the worker to connect back, and that module imports pyspark's Connect client, pandas and
pyarrow before it connects: 3-4 s on an idle machine here, more than 10 s under load, when the query
fails to start ("Python worker failed to connect back").

The server runs its Python workers through `launcher` (PYSPARK_PYTHON), which runs this module. For
the sink's worker it connects back with pyspark's own small helper (about 0.4 s of imports), then
imports the worker module and runs its `main`; once connected, Spark waits 5 minutes for the rest.
Any other worker Spark asks for is run unchanged, as Spark asked.

With the lab's server the sink's worker is not even started: the server runs a zygote beside it
(`python -m obslab.stream.worker --zygote PATH --watch SERVER_PID`, see obslab.zygote) that has
pyspark's Connect client, pandas, pyarrow, DuckDB and the sink imported. The launcher, named by
WORKER_ZYGOTE in its environment, asks it for a fork with its own stdin, stdout, stderr and
environment, and waits for that child; the child connects back to Spark and runs the worker. When no
zygote answers the launcher runs the worker itself, as above. The zygote ends with the server.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

FOREACH_BATCH_WORKER = "pyspark.sql.connect.streaming.worker.foreach_batch_worker"
WORKER_ZYGOTE = "OBSLAB_WORKER_ZYGOTE"  # the environment variable naming the zygote's socket
# What the sink's worker imports (the worker module itself, and the sink unpickled in it).
WARM = ("pyspark.worker_util", FOREACH_BATCH_WORKER, "pandas", "pyarrow", "duckdb", "obslab.stream.sink",
        "obslab.stream.transform", "obslab.store")


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
    if argv != ["-m", FOREACH_BATCH_WORKER]:
        os.execv(sys.executable, [sys.executable, *argv])  # not the sink's worker: as Spark asked
    zygote = os.environ.get(WORKER_ZYGOTE)
    if zygote and forked(Path(zygote)):
        return
    run_worker()


def run_worker(request: dict | None = None) -> None:
    """The sink's worker: connect back to Spark, then import the worker module and run it."""
    from pyspark.worker_util import get_sock_file_to_executor

    with get_sock_file_to_executor(timeout=None) as sock_file:
        from pyspark.sql.connect.streaming.worker import foreach_batch_worker

        foreach_batch_worker.main(sock_file, sock_file)


def forked(zygote: Path) -> bool:
    """Have the zygote fork the worker with this process's stdio and environment, and wait for it to end
    (passing on SIGTERM and SIGINT); False when no zygote answers (said on stderr)."""
    from obslab.zygote import ZygoteError, ask, wait_for

    try:
        pid = ask(zygote, {"env": dict(os.environ), "cwd": os.getcwd()}, fds=[0, 1, 2])
    except ZygoteError as err:
        print(f"obslab worker: {err}; running the worker in this process", file=sys.stderr, flush=True)
        return False

    def pass_on(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pass_on)
    wait_for(pid)
    return True


def serve_workers(argv: list[str]) -> None:
    """`--zygote PATH [--watch PID]`: the worker zygote, ending when process PID (the server) does."""
    from obslab.zygote import preload, serve

    path = Path(argv[0])
    watch = int(argv[argv.index("--watch") + 1]) if "--watch" in argv else None
    serve(path, run_worker, warm=lambda: preload(WARM), watch=watch, name="spark-workers")


if __name__ == "__main__":
    main(sys.argv[1:])
