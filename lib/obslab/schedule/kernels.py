"""Warm notebook kernels for scheduled runs: one process imports the notebooks' libraries once, then
forks every task's kernel from itself.

A scheduled notebook used to spend seconds of every run before its first line of work: the kernel's
interpreter and IPython starting (~1.2 s), then its cells importing pandas (~2 s), Spark's Connect
client (~0.6 s more) and altair (~2.5 s, one of them building a grammar for a URL checker). The lab's
Airflow runs one more process, the zygote, which imports all that once. For each kernel a task asks
for it forks a child that becomes the kernel (ipykernel, with the task's connection file, working
folder and environment): a fork takes milliseconds, and the child shares the imported modules'
memory with the zygote until it writes to it. Every kernel is still new for its notebook: nothing a
notebook does reaches the zygote or the next kernel.

    serve(path)                the zygote: a Unix socket (0600) at `path`; one JSON request per
                               connection ({connection_file, cwd, env, watch_pid}), answered with
                               the kernel's pid
    ZygoteKernelManager        jupyter_client's kernel manager whose kernel comes from the zygote;
                               with no zygote answering it starts one the usual way
    socket_path(settings)      DATA_DIR/airflow/kernels.sock
    python -m obslab.schedule.kernels PATH    runs serve(PATH) (`obslab airflow start` does)

A kernel forked this way runs in its own session (killed as a group, as jupyter_client kills
kernels), and ends when the task that asked for it is gone or when the zygote is.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from obslab.settings import Settings

# What the lab's notebooks import, loaded by the zygote once. A module missing here only costs its
# import in the kernel, as before.
WARM = ("IPython", "ipykernel.kernelapp", "ipykernel.ipkernel", "pandas", "pyarrow", "duckdb", "altair",
        "pyspark.sql.connect.session", "pyspark.sql.functions", "confluent_kafka", "obslab.lab", "obslab.views",
        "obslab.charts", "obslab.parameters", "obslab.scratch", "obslab.generator.run", "obslab.stream.job",
        "obslab.detect.run", "obslab.narrate.run", "obslab.narrate.grounding")
REQUEST_LIMIT = 1 << 20  # bytes: a request is a path, a folder and an environment
ANSWER_TIMEOUT_S = 10.0


def socket_path(settings: Settings) -> Path:
    return settings.data_dir / "airflow" / "kernels.sock"


# --- the zygote ---------------------------------------------------------------------------------------

def warm_up() -> list[str]:
    """Import WARM and build one chart, so the kernels fork with altair's schema already compiled.
    Returns what could not be imported (said in the zygote's log, not fatal)."""
    missing = []
    for module in WARM:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - a kernel imports it itself then, and says why
            missing.append(f"{module}: {err}")
    try:
        import altair as alt
        import pandas as pd

        alt.Chart(pd.DataFrame({"x": [1]})).mark_point().encode(x="x:Q").to_dict()
    except Exception as err:  # noqa: BLE001
        missing.append(f"altair chart: {err}")
    return missing


def serve(path: Path, warm: bool = True) -> None:
    """Listen on `path` and fork a kernel per request until SIGTERM or SIGINT."""
    if warm:
        for problem in warm_up():
            print(f"zygote: not preloaded: {problem}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is created 0600: only this user may ask for a kernel
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    listener.settimeout(1.0)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"zygote: ready on {path} (pid {os.getpid()})", flush=True)
    try:
        while not stopping.is_set():
            _reap()
            try:
                conn, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except InterruptedError:
                continue
            with conn:
                _answer(conn, listener)
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _reap() -> None:
    """Collect the kernels that ended (they are this process's children)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _answer(conn: socket.socket, listener: socket.socket) -> None:
    conn.settimeout(ANSWER_TIMEOUT_S)
    try:
        request = _read_request(conn)
    except (OSError, ValueError) as err:
        _send(conn, {"error": f"bad request: {err}"})
        return
    pid = os.fork()
    if pid == 0:  # the child: never returns
        conn.close()
        listener.close()
        _become_kernel(request)
    print(f"zygote: kernel {pid} for {request['connection_file']}", flush=True)
    _send(conn, {"pid": pid})


def _read_request(conn: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > REQUEST_LIMIT:
            raise ValueError(f"over {REQUEST_LIMIT} bytes")
    request = json.loads(data)
    if not isinstance(request, dict) or not isinstance(request.get("connection_file"), str):
        raise ValueError("expected {connection_file, cwd, env, watch_pid}")
    if not isinstance(request.get("env", {}), dict) or not isinstance(request.get("cwd", "."), str):
        raise ValueError("env must be an object and cwd a string")
    return request


def _send(conn: socket.socket, answer: dict) -> None:
    try:
        conn.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        pass  # the asker gave up; a forked kernel then ends with its watch_pid


def _become_kernel(request: dict) -> None:
    """In the forked child: become the task's kernel, as `python -m ipykernel_launcher -f FILE` would."""
    code = 1
    try:
        os.setsid()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        cwd = request.get("cwd") or os.getcwd()
        os.chdir(cwd)
        if request.get("env"):
            os.environ.clear()
            os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        from obslab.settings import get_settings

        get_settings.cache_clear()  # the kernel reads the task's settings, not the zygote's
        if request.get("watch_pid"):
            _end_with(int(request["watch_pid"]))
        from ipykernel.kernelapp import IPKernelApp

        sys.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", request["connection_file"]]
        IPKernelApp.launch_instance(argv=["-f", request["connection_file"]])
        code = 0
    except BaseException as err:  # noqa: BLE001 - the child must never return into the zygote's loop
        print(f"zygote: kernel {os.getpid()} failed: {err!r}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _end_with(pid: int) -> None:
    """End this kernel when process `pid` (the task that asked for it) is gone."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="obslab-task-watch", daemon=True).start()


# --- the task's side ----------------------------------------------------------------------------------

class ZygoteError(OSError):
    """The zygote did not give a kernel (none running, or it refused)."""


def ask(path: Path, connection_file: str, cwd: str, env: dict[str, str], timeout_s: float = ANSWER_TIMEOUT_S) -> int:
    """Ask the zygote at `path` for a kernel; returns its pid. ZygoteError when it gives none."""
    request = {"connection_file": connection_file, "cwd": cwd, "env": env, "watch_pid": os.getpid()}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as err:
        raise ZygoteError(f"no kernel from the zygote at {path}: {err}") from err
    try:
        answer = json.loads(data)
        return int(answer["pid"])
    except (ValueError, KeyError, TypeError) as err:
        raise ZygoteError(f"the zygote at {path} gave no kernel: {data[:200]!r}") from err


class ForkedKernel:
    """A kernel process this process did not start (the zygote's child), seen through Popen's methods."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not _running(self.pid):
            self.returncode = -signal.SIGKILL  # its parent, the zygote, collected the real status
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"kernel {self.pid} still runs")
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for the zygote to collect it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


class ZygoteProvisioner(LocalProvisioner):
    """LocalProvisioner whose kernel is forked by the zygote; the usual start when none answers."""

    zygote: Path | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs):
        if self.zygote is None or "-f" not in cmd:
            return await super().launch_kernel(cmd, **kwargs)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        env = dict(kwargs.get("env") or os.environ)
        try:
            pid = ask(self.zygote, cmd[cmd.index("-f") + 1], cwd, env)
        except ZygoteError as err:
            self.log.warning("%s; starting the kernel the usual way", err)
            return await super().launch_kernel(cmd, **kwargs)
        self.process = ForkedKernel(pid)
        self.pid, self.pgid, self.cwd = pid, pid, cwd  # its own session: the group is the kernel's
        self.log.info("kernel %s forked by the zygote at %s", pid, self.zygote)
        return self.connection_info


class ZygoteKernelManager(AsyncKernelManager):
    """A kernel manager for nbclient/papermill (`kernel_manager_class=`) whose kernels the zygote at
    ZYGOTE (a class attribute, set by the caller) forks."""

    zygote: Path | None = None

    async def _async_pre_start_kernel(self, **kw):
        if self.provisioner is None:
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = ZygoteProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
            self.provisioner.zygote = self.zygote
        return await super()._async_pre_start_kernel(**kw)


def manager_for(path: Path) -> type[ZygoteKernelManager]:
    """A ZygoteKernelManager class bound to the zygote at `path` (nbclient takes a class, not an instance)."""
    return type("ZygoteKernelManager", (ZygoteKernelManager,), {"zygote": path})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m obslab.schedule.kernels SOCKET_PATH", file=sys.stderr)
        return 2
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # as ipykernel_launcher does: a kernel's imports do not look in its folder
    serve(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
