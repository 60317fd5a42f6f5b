"""The lab's processes as the OS sees them: is a pid alive, is a port free, stop what a pid file
records, stop several at once, the last lines of a log, signal and watch a process group. The broker, the cluster, the shop, the
OpenTelemetry Collector and the Spark server run their processes with these."""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from pathlib import Path

import psutil

STOP_TIMEOUT_S = 30.0  # SIGTERM's grace before SIGKILL


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def recorded_pid(pid_file: Path, marker: str) -> int | None:
    """The PID in `pid_file` while that process runs and its command line holds `marker` (the PID
    may have been reused by an unrelated process since ours died); None otherwise."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not process_alive(pid):
        return None
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return pid  # its command line cannot be read: trust the pid file
    return pid if marker in cmdline else None


def stop_recorded(pid: int | None, pid_file: Path, what: str) -> str:
    """Stop a lab process (SIGTERM, then SIGKILL after STOP_TIMEOUT_S) and remove its pid file;
    says what happened to `what`."""
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return f"{what} is not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(0.1)
    how = "stopped"
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)
        how = f"did not stop within {STOP_TIMEOUT_S:.0f} s; killed"
        while process_alive(pid):
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return f"{what} (PID {pid}) {how}"


def stop_all(pids: dict[str, int], timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop several processes at once (SIGTERM to all, SIGKILL to those left after `timeout_s`) and wait
    until none runs; returns the names of those that had to be killed."""
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(process_alive(p) for p in pids.values()):
        time.sleep(0.1)
    killed = [name for name, pid in pids.items() if process_alive(pid)]
    for name in killed:
        os.kill(pids[name], signal.SIGKILL)
    while any(process_alive(p) for p in pids.values()):
        time.sleep(0.05)
    return killed


def process_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) is not running, and is reaped
    here when it is a child of this process."""
    try:
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.ZombieProcess:
        pass
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log, for an error message; "(no log)" when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def reap(pid: int) -> None:
    """Collect the exit status of a process this process started (else it lingers as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # started by another process (`obslab demo-stop`): its own parent reaps it


def group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` runs (its zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(process_alive(pid) for pid in group_members(pgid))


def group_members(pgid: int) -> list[int]:
    """PIDs of the processes in process group `pgid` (what `pgrep -g` lists)."""
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid:
                members.append(pid)
        except (ProcessLookupError, PermissionError):
            pass  # gone since the listing, or not ours to ask about
    return members


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to every process of group `pgid`; a group that is gone already is left alone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
