"""A zygote: a process that imports heavy Python libraries once, then forks a ready child per request.

Starting Python and importing pandas, pyarrow, Spark's Connect client, DuckDB and altair costs
seconds in every new process; a fork of a process that has them costs milliseconds, and the child
shares their memory with the zygote until it writes to it. The lab runs two: one for the notebook
kernels of scheduled tasks (obslab.schedule.kernels) and one for the Python workers of its Spark
server (obslab.stream.worker). Every child is new for its caller: nothing it does reaches the zygote.

    serve(path, become, warm)  listen on a Unix socket (0600) at `path`; for each request, fork a
                               child that runs `become(request)` and never returns; answer {"pid": N}
    ask(path, request, fds)    send one request (and, optionally, file descriptors for the child's
                               stdin/stdout/stderr); returns the child's pid; ZygoteError when none
    running(pid)               alive and not a zombie waiting to be collected

A request is one JSON object: {"env": {...}, "cwd": "...", "watch_pid": N, ...}. The child takes
the environment and folder, runs in its own session, and ends when process `watch_pid` (the asker)
is gone. The zygote ends with SIGTERM or SIGINT, or when its own `watch` process is gone.
"""

from __future__ import annotations

import array
import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REQUEST_LIMIT = 1 << 20  # bytes: an environment and a few paths
ANSWER_TIMEOUT_S = 10.0


class ZygoteError(OSError):
    """The zygote gave no child (none listening, or it refused the request)."""


def preload(modules: Iterable[str]) -> list[str]:
    """Import `modules`; returns what could not be imported (a child imports it itself then)."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - reported by the caller, never fatal
            missing.append(f"{module}: {err}")
    return missing


def serve(path: Path, become: Callable[[dict], None], warm: Callable[[], list[str]] | None = None,
          watch: int | None = None, name: str = "zygote", check: Callable[[dict], None] | None = None) -> None:
    """Listen on `path` and fork a child running `become(request)` per request, until SIGTERM/SIGINT
    or until process `watch` is gone. `check(request)` raises ValueError for a request to refuse."""
    if warm is not None:
        for problem in warm():
            print(f"{name}: not preloaded: {problem}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is created 0600: only this user may ask
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    listener.settimeout(1.0)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"{name}: ready on {path} (pid {os.getpid()})", flush=True)
    try:
        while not stopping.is_set() and (watch is None or running(watch)):
            _reap()
            try:
                conn, _ = listener.accept()
            except (TimeoutError, socket.timeout, InterruptedError):
                continue
            with conn:
                _answer(conn, listener, become, name, check)
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _reap() -> None:
    """Collect the children that ended."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _answer(conn: socket.socket, listener: socket.socket, become: Callable[[dict], None], name: str,
            check: Callable[[dict], None] | None) -> None:
    conn.settimeout(ANSWER_TIMEOUT_S)
    try:
        request, fds = _receive(conn)
    except (OSError, ValueError) as err:
        _send(conn, {"error": f"bad request: {err}"})
        return
    try:
        if check is not None:
            check(request)
    except ValueError as err:
        for fd in fds:
            os.close(fd)
        _send(conn, {"error": f"bad request: {err}"})
        return
    pid = os.fork()
    if pid == 0:  # the child: never returns into the loop
        code = 1
        try:
            conn.close()
            listener.close()
            _prepare_child(request, fds)
            become(request)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 0
        except BaseException as err:  # noqa: BLE001
            print(f"{name}: child {os.getpid()} failed: {err!r}", file=sys.stderr, flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    print(f"{name}: child {pid} for pid {request.get('watch_pid')}", flush=True)
    _send(conn, {"pid": pid})


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * array.array("i").itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        if not chunk:
            break
        data += chunk
        if len(data) > REQUEST_LIMIT:
            raise ValueError(f"over {REQUEST_LIMIT} bytes")
    try:
        request = json.loads(data)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        if not isinstance(request.get("env", {}), dict) or not isinstance(request.get("cwd", "."), str):
            raise ValueError("env must be an object and cwd a string")
        if not isinstance(request.get("watch_pid", 0), int):
            raise ValueError("watch_pid must be a number")
        if len(fds) not in (0, 3):
            raise ValueError("pass no file descriptors or three (stdin, stdout, stderr)")
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def _send(conn: socket.socket, answer: dict) -> None:
    try:
        conn.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        pass  # the asker gave up; a forked child then ends with its watch_pid


def _prepare_child(request: dict, fds: list[int]) -> None:
    """In the child: its own session, default signals, the asker's stdio, folder and environment."""
    os.setsid()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    if fds:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
    else:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    os.chdir(request.get("cwd") or os.getcwd())
    if request.get("env"):
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        # as a new interpreter would: the caller's PYTHONPATH first on the import path
        for entry in reversed([e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]):
            if entry not in sys.path:
                sys.path.insert(0, entry)
    from obslab.settings import get_settings

    get_settings.cache_clear()  # the child reads its caller's settings, not the zygote's
    if request.get("watch_pid"):
        _end_with(int(request["watch_pid"]))


def _end_with(pid: int) -> None:
    """End this process when process `pid` is gone (checked every second)."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if not running(pid):
                os._exit(1)

    threading.Thread(target=watch, name="obslab-zygote-watch", daemon=True).start()


def ask(path: Path, request: dict, fds: list[int] | None = None, timeout_s: float = ANSWER_TIMEOUT_S) -> int:
    """Ask the zygote at `path` for a child; returns its pid. ZygoteError when it gives none."""
    request = {"watch_pid": os.getpid(), **request}
    payload = json.dumps(request).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(path))
            if fds:
                conn.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                conn.sendall(payload)
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as err:
        raise ZygoteError(f"no process from the zygote at {path}: {err}") from err
    try:
        return int(json.loads(data)["pid"])
    except (ValueError, KeyError, TypeError) as err:
        raise ZygoteError(f"the zygote at {path} gave no process: {data[:200]!r}") from err


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent to collect it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def wait_for(pid: int, poll_s: float = 0.05) -> None:
    """Block until process `pid` (not necessarily a child of this one) has ended."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while running(pid):
            time.sleep(poll_s)
        return
    import select

    try:
        while running(pid):
            select.select([fd], [], [], 1.0)  # readable when the process ends; zombies are checked by running()
    finally:
        os.close(fd)
