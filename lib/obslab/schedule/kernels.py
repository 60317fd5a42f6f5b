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

    serve_kernels(path)        the zygote (obslab.zygote): a Unix socket (0600) at `path`; one
                               JSON request per connection ({connection_file, cwd, env,
                               watch_pid}), answered with the kernel's pid
    ZygoteKernelManager        jupyter_client's kernel manager whose kernel comes from the zygote;
                               with no zygote answering it starts one the usual way
    socket_path(settings)      DATA_DIR/airflow/kernels.sock
    manager_for(path)          that manager bound to the zygote at `path` (NotebookOperator's)
    python -m obslab.schedule.kernels PATH    runs serve_kernels(PATH) (`obslab airflow start` does)

A kernel forked this way runs in its own session (killed as a group, as jupyter_client kills
kernels), and ends when the task that asked for it is gone or when the zygote is.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from obslab.settings import Settings
from obslab.zygote import ZygoteError, ask, preload, running, serve

# What the lab's notebooks import, loaded by the zygote once (ipykernel.debugger: 0.4 s of every kernel's
# start, debugpy compiling its vendored sources). A module missing here only costs its import in the kernel.
WARM = ("IPython", "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.debugger", "pandas", "pyarrow",
        "duckdb", "altair", "pyspark.sql.connect.session", "pyspark.sql.functions", "confluent_kafka", "obslab.lab",
        "obslab.views", "obslab.charts", "obslab.parameters", "obslab.scratch", "obslab.generator.run",
        "obslab.stream.job", "obslab.detect.run", "obslab.narrate.run", "obslab.narrate.grounding")


def socket_path(settings: Settings) -> Path:
    return settings.data_dir / "airflow" / "kernels.sock"


def warm_up() -> list[str]:
    """Import WARM and build one chart, so the kernels fork with altair's schema already compiled.
    Returns what could not be done (said in the zygote's log, not fatal)."""
    missing = preload(WARM)
    try:
        import altair as alt
        import pandas as pd

        alt.Chart(pd.DataFrame({"x": [1]})).mark_point().encode(x="x:Q").to_dict()
    except Exception as err:  # noqa: BLE001
        missing.append(f"altair chart: {err}")
    return missing


def become_kernel(request: dict) -> None:
    """In the forked child: become the task's kernel, as `python -m ipykernel_launcher -f FILE` would."""
    from ipykernel.kernelapp import IPKernelApp

    sys.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", request["connection_file"]]
    IPKernelApp.launch_instance(argv=["-f", request["connection_file"]])


def check_request(request: dict) -> None:
    if not isinstance(request.get("connection_file"), str):
        raise ValueError("a kernel request needs connection_file (the kernel's connection file)")


def serve_kernels(path: Path, warm: bool = True) -> None:
    """The kernels' zygote on `path` (what `python -m obslab.schedule.kernels PATH` runs)."""
    serve(path, become_kernel, warm=warm_up if warm else None, name="kernels", check=check_request)


class ForkedKernel:
    """A kernel process this process did not start (the zygote's child), seen through Popen's methods."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not running(self.pid):
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


class ZygoteProvisioner(LocalProvisioner):
    """LocalProvisioner whose kernel is forked by the zygote; the usual start when none answers."""

    zygote: Path | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs):
        if self.zygote is None or "-f" not in cmd:
            return await super().launch_kernel(cmd, **kwargs)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        env = dict(kwargs.get("env") or os.environ)
        try:
            pid = ask(self.zygote, {"connection_file": cmd[cmd.index("-f") + 1], "cwd": cwd, "env": env})
        except ZygoteError as err:
            self.log.warning("%s; starting the kernel the usual way", err)
            return await super().launch_kernel(cmd, **kwargs)
        self.process = ForkedKernel(pid)
        self.pid, self.pgid, self.cwd = pid, pid, cwd  # its own session: the group is the kernel's
        self.log.info("kernel %s forked by the zygote at %s", pid, self.zygote)
        return self.connection_info


class ZygoteKernelManager(AsyncKernelManager):
    """A kernel manager for nbclient/papermill (`kernel_manager_class=`) whose kernels the zygote at its
    `zygote` class attribute forks (see manager_for)."""

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
    serve_kernels(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
