"""The one-command demo: broker, generator (with a fault-free history first), stream, detector,
narrator and dashboard as processes of one lab, and how to see and stop them.

    start(settings)   broker up; each process started in its own session (a process group), its
                      output in DATA_DIR/logs/<name>.log, its pid in DATA_DIR/run/<name>.json
    status(settings)  each recorded process: running or not, and its log's last line
    stop(settings)    SIGTERM to every group, SIGKILL after a grace period, then the broker

`obslab demo` runs start, prints the dashboard's URL and the seconds until the first incident is
narrated, then waits for Ctrl-C (or SIGTERM, or `obslab demo-stop` from elsewhere) and stops all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from obslab.broker import process_alive
from obslab.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("stream", "detect", "narrate", "generate", "dashboard")


@dataclass
class ProcessInfo:
    name: str
    pid: int
    command: list[str]
    log: Path
    running: bool
    last_line: str


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def commands(settings: Settings, dashboard_port: int) -> dict[str, list[str]]:
    obslab = [sys.executable, "-m", "obslab.cli"]
    return {
        "stream": [*obslab, "stream"],
        "detect": [*obslab, "detect"],
        "narrate": [*obslab, "narrate"],
        "generate": [*obslab, "generate"],
        "dashboard": [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
                      "--server.address", "127.0.0.1", "--server.port", str(dashboard_port),
                      "--server.headless", "true", "--browser.gatherUsageStats", "false"],
    }


def start(settings: Settings, env: dict[str, str] | None = None, dashboard_port: int = 8501) -> list[ProcessInfo]:
    """Start the broker and every process of the demo; returns what was started."""
    from obslab.broker import LocalBroker
    from obslab.store import Store

    LocalBroker(settings).start()
    Store.from_settings(settings).migrate()
    return [spawn(settings, name, cmd, env) for name, cmd in commands(settings, dashboard_port).items()]


def spawn(settings: Settings, name: str, cmd: list[str], env: dict[str, str] | None = None) -> ProcessInfo:
    """Start one lab process in its own session, output to DATA_DIR/logs/<name>.log, recorded by name."""
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = settings.logs_dir / f"{name}.log"
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    (run_dir(settings) / f"{name}.json").write_text(json.dumps({"pid": proc.pid, "command": cmd, "log": str(log)}))
    return ProcessInfo(name, proc.pid, cmd, log, True, "")


def status(settings: Settings, names: tuple[str, ...] = PROCESSES) -> list[ProcessInfo]:
    """Each recorded process (of the demo, by default), alive or not, with the last line of its log."""
    out = []
    for name in names:
        record = run_dir(settings) / f"{name}.json"
        if not record.exists():
            continue
        meta = json.loads(record.read_text())
        log = Path(meta["log"])
        last = ""
        if log.exists():
            lines = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()
            last = lines[-1][-200:] if lines else ""
        out.append(ProcessInfo(name, meta["pid"], meta["command"], log, process_alive(meta["pid"]), last))
    return out


def stop(settings: Settings, grace_s: float = 30.0, broker: bool = True,
         names: tuple[str, ...] = PROCESSES) -> list[str]:
    """Stop every recorded process group (SIGTERM, then SIGKILL after `grace_s`) and the broker."""
    stopped = []
    infos = status(settings, names)
    for info in infos:
        if info.running:
            _signal_group(info.pid, signal.SIGTERM)
            stopped.append(info.name)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(i.pid) for i in infos):
        time.sleep(0.2)
    for info in infos:
        if _group_alive(info.pid):
            _signal_group(info.pid, signal.SIGKILL)
        _reap(info.pid)
        (run_dir(settings) / f"{info.name}.json").unlink(missing_ok=True)
    if broker:
        from obslab.broker import LocalBroker

        LocalBroker(settings).stop()
    return stopped


def first_narration(store, since: float) -> tuple[float, str] | None:
    """(seconds since `since` (a time.time()), title) of the first narrated incident, if there is one."""
    if not store.path.exists():
        return None
    rows = store.query("SELECT min(created_at), arg_min(title, created_at) FROM incident_summaries")
    if not rows or rows[0][0] is None:
        return None
    return rows[0][0].timestamp() - since, rows[0][1]


def _reap(pid: int) -> None:
    """Collect the exit status of a process this process started (else it lingers as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # started by another process (`obslab demo-stop`): its own parent reaps it


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(process_alive(int(p)) for p in _group_members(pgid))


def _group_members(pgid: int) -> list[str]:
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    return out.split()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
