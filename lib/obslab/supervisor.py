"""The demo's processes and their run records: each started in its own session (a process group),
output to DATA_DIR/logs/<name>.log, recorded in DATA_DIR/run/<name>.json (pid, command, restarts, how
it last ended), and the Supervisor that restarts the ones that die.

    spawn             start one process and record it
    recorded          each recorded process: running or not, restarts, how it last ended
    Supervisor        restarts a process that died (killed, or exited with an error), at most
                      MAX_RESTARTS times each, after a pause that doubles; a process that exits
                      with code 0 has finished, and one ended by SIGTERM or SIGINT was stopped on
                      purpose: neither is restarted
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from obslab.processes import process_alive, signal_group
from obslab.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MAX_RESTARTS = 3  # in a row: a stage that keeps dying has a cause a restart will not fix
RESTART_PAUSE_S = 2.0  # before the first restart; doubles with each further one
# A stage that ran this long before it died was not in a crash loop: its restarts count from 0 again, so a
# long run survives faults spread over hours (a broker restart now, a held store later), not just three.
STABLE_S = 300.0
STOPPED = (-signal.SIGTERM, -signal.SIGINT)  # exit codes of a process stopped on purpose (`obslab demo-stop`)


@dataclass
class ProcessInfo:
    """A recorded demo process and how it fared."""

    name: str
    pid: int
    command: list[str]
    log: Path
    running: bool
    last_line: str
    restarts: int = 0
    max_restarts: int = MAX_RESTARTS
    last_exit: dict | None = None  # {"pid", "code", "at", "error"} of its newest end (this run's, or the one before)
    gave_up: bool = False  # died more than MAX_RESTARTS times: left stopped
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)  # when this process started it

    @property
    def state(self) -> str:
        """running | restarting | gave up | finished (exit code 0) | stopped (SIGTERM, SIGINT) | exited (no demo saw it end)."""
        if self.running:
            return "running"
        ended = self.last_exit if self.last_exit and self.last_exit.get("pid") == self.pid else None
        if ended is None:
            return "exited"
        if ended["code"] == 0:
            return "finished"
        if ended["code"] in STOPPED:
            return "stopped"
        return "gave up" if self.gave_up else "restarting"


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def spawn(settings: Settings, name: str, cmd: list[str], env: dict[str, str] | None = None,
          restarts: int = 0, last_exit: dict | None = None, max_restarts: int = MAX_RESTARTS) -> ProcessInfo:
    """Start one lab process in its own session, output to DATA_DIR/logs/<name>.log, recorded by name."""
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = settings.logs_dir / f"{name}.log"
    with log.open("a") as out:
        offset = out.tell()  # where this run's output begins: its error is looked for after it
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _write_record(settings, name, {"pid": proc.pid, "command": cmd, "log": str(log), "log_offset": offset,
                                       "env": env or {}, "restarts": restarts, "max_restarts": max_restarts,
                                       "last_exit": last_exit, "gave_up": False, "started": time.time()})
    except OSError:  # unrecorded, nothing could stop or supervise it: it must not run
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return ProcessInfo(name, proc.pid, cmd, log, True, "", restarts, max_restarts, last_exit, False, proc)


def _write_record(settings: Settings, name: str, record: dict) -> None:
    path = run_dir(settings) / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)  # `obslab status` in another process never reads half a record


def _read_record(settings: Settings, name: str) -> dict | None:
    try:
        return json.loads((run_dir(settings) / f"{name}.json").read_text())
    except FileNotFoundError:
        return None


class Supervisor:
    """Restarts the demo's processes of `restarted` that die, each at most `max_restarts` times in a row (a run
    of `stable_s` or more before a death starts the count again), and says what it did."""

    def __init__(self, settings: Settings, started: list[ProcessInfo], restarted: tuple[str, ...],
                 max_restarts: int = MAX_RESTARTS, pause_s: float = RESTART_PAUSE_S, stable_s: float = STABLE_S):
        self.settings, self.max_restarts, self.pause_s, self.stable_s = settings, max_restarts, pause_s, stable_s
        self.restarted = restarted  # the names a restart is safe for (not a generator: see obslab.demo.RESTARTED)
        self.children = {p.name: p.proc for p in started if p.proc is not None}  # name -> running Popen
        self.waiting: dict[str, tuple[float, dict]] = {}  # name -> (restart at (monotonic), its record)

    @property
    def active(self) -> bool:
        """Some process runs or waits for its restart."""
        return bool(self.children or self.waiting)

    def check(self) -> list[str]:
        """Notice what died since the last check and restart what is due; one message per event."""
        # Only this object waits for its children: a reap elsewhere (process_alive) would lose the exit code.
        messages = []
        for name, proc in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[name]
            # What it started (a stream's Spark JVM) must not outlive it, nor hold what its restart needs.
            signal_group(proc.pid, signal.SIGKILL)
            record = _read_record(self.settings, name)
            if record is None:
                continue  # `obslab demo-stop` stopped it and removed its record: nothing to say or restart
            ended = {"pid": proc.pid, "code": code, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "error": "" if code < 0 else last_error(Path(record.get("log", "")), record.get("log_offset", 0))}
            record["last_exit"] = ended
            if time.time() - record.get("started", 0) >= self.stable_s:
                record["restarts"] = 0  # it ran long enough: this death starts a new count
            how = describe_exit(ended)
            if code == 0 or code in STOPPED:  # it finished, or someone stopped it: not a death
                messages.append(f"{name} {'finished' if code == 0 else 'was stopped'} ({how})")
            elif name not in self.restarted:
                record["gave_up"] = True
                messages.append(f"{name} {how}; not restarted: a new run would replay its scenario and history. "
                                f"See {record.get('log')}")
            elif record.get("restarts", 0) >= self.max_restarts:
                record["gave_up"] = True
                messages.append(f"{name} {how}; not restarted: it was restarted {self.max_restarts} times "
                                f"already. See {record.get('log')}")
            else:
                pause = self.pause_s * 2 ** record.get("restarts", 0)
                self.waiting[name] = (time.monotonic() + pause, record)
                messages.append(f"{name} {how}; restarting in {pause:g} s "
                                f"({record.get('restarts', 0) + 1} of {self.max_restarts})")
            try:
                _write_record(self.settings, name, record)
            except OSError as err:  # a full disk, say: the restart is planned all the same
                messages.append(f"could not record how {name} ended ({err}); the demo goes on")
        for name, (due, record) in list(self.waiting.items()):
            if time.monotonic() < due:
                continue
            del self.waiting[name]
            if _read_record(self.settings, name) is None:
                continue  # `obslab demo-stop` stopped the demo meanwhile and removed the record
            try:
                info = spawn(self.settings, name, record["command"], record.get("env"),
                             record.get("restarts", 0) + 1, record["last_exit"], self.max_restarts)
            except OSError as err:  # a full disk: try again after the same pause
                self.waiting[name] = (time.monotonic() + self.pause_s, record)
                messages.append(f"{name} could not be restarted ({err}); trying again in {self.pause_s:g} s")
                continue
            self.children[name] = info.proc
            messages.append(f"{name} restarted (pid {info.pid}, restart {info.restarts} of {self.max_restarts})")
        return messages


_ERROR_LINE = re.compile(r"^(error: |\w+(\.\w+)*(Error|Exception)\b)")


def last_error(log: Path, offset: int = 0) -> str:
    """The last error line (`error: ...`, or a traceback's last line) a run wrote to its log after `offset`."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    found = [line for line in lines if _ERROR_LINE.match(line)]
    return (found or lines or [""])[-1][:300]


def describe_exit(ended: dict) -> str:
    """'exited with code 1 at ...: error: ...' or 'was killed by SIGKILL at ...'."""
    code = ended["code"]
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} at {ended['at']}"
    return f"exited with code {code} at {ended['at']}" + (f": {ended['error']}" if ended.get("error") else "")


def recorded(settings: Settings, names: tuple[str, ...]) -> list[ProcessInfo]:
    """Each recorded process of `names`, alive or not, with the last line of its log."""
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
        out.append(ProcessInfo(name, meta["pid"], meta["command"], log, process_alive(meta["pid"]), last,
                               meta.get("restarts", 0), meta.get("max_restarts", MAX_RESTARTS), meta.get("last_exit"),
                               meta.get("gave_up", False)))
    return out
