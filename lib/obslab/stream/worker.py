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
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FOREACH_BATCH_WORKER = "pyspark.sql.connect.streaming.worker.foreach_batch_worker"


def launcher(folder: Path) -> Path:
    """An executable in `folder` that runs this module with the lab's Python: the server's PYSPARK_PYTHON."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "python-worker"
    path.write_text(f"#!/bin/sh\nexec '{sys.executable}' -m obslab.stream.worker \"$@\"\n")
    path.chmod(0o755)
    return path


def main(argv: list[str]) -> None:
    if argv != ["-m", FOREACH_BATCH_WORKER]:
        os.execv(sys.executable, [sys.executable, *argv])  # not the sink's worker: as Spark asked
    from pyspark.worker_util import get_sock_file_to_executor

    with get_sock_file_to_executor(timeout=None) as sock_file:
        from pyspark.sql.connect.streaming.worker import foreach_batch_worker

        foreach_batch_worker.main(sock_file, sock_file)


if __name__ == "__main__":
    main(sys.argv[1:])
