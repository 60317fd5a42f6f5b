"""The one-command demo: broker, generator (with a fault-free history first), stream, detector,
narrator and dashboard as processes of one lab, and how to see and stop them.

The generator starts DEMO_LEAD_IN_SECONDS into its scenario (GENERATE_LEAD_IN_SECONDS): those
first seconds go out at once after the history, so the scenario's first fault comes that much
sooner after launch, while its event times and ground truth stay the scenario's.

    start(settings)   the lab's Spark server starting (`obslab spark start`, when SPARK_SERVER=auto) and
                      the broker up; each process started in its own session (a process group), its
                      output in DATA_DIR/logs/<name>.log, its pid in DATA_DIR/run/<name>.json
    status(settings)  each recorded process: running or not, restarts, how it last ended
    Supervisor        restarts a stage that died (killed, or exited with an error), at most
                      MAX_RESTARTS times each, after a pause that doubles (not the generator: a
                      new run would publish its history and faults again); a process that exits
                      with code 0 has finished (the generator at the end of its scenario), and
                      one ended by SIGTERM or SIGINT was stopped on purpose: neither is restarted
    stop(settings)    SIGTERM to every group, SIGKILL after a grace period, then the broker and Spark

`obslab demo` runs start, prints the dashboard's URL and the seconds until the first incident is
narrated, says when a process died and whether it was restarted, then waits for Ctrl-C (or SIGTERM,
or `obslab demo-stop` from elsewhere) and stops all (`supervise`). `obslab demo --source spans`
(obslab.demo_otel) is the same with the shop under load and the Collector instead of the generator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

from obslab.lab import Lab
from obslab.processes import process_alive
from obslab.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("stream", "detect", "narrate", "generate", "dashboard")
LOAD = "load"  # `obslab demo --source spans` (obslab.demo_otel) runs Locust's load on the shop instead of the generator
RECORDED = (*PROCESSES, LOAD)  # the processes either demo records: what status, stop and `obslab status` look for
MAX_RESTARTS = 3  # in a row: a stage that keeps dying has a cause a restart will not fix
RESTART_PAUSE_S = 2.0  # before the first restart; doubles with each further one
# A stage that ran this long before it died was not in a crash loop: its restarts count from 0 again, so a
# long run survives faults spread over hours (a broker restart now, a held store later), not just three.
STABLE_S = 300.0
RESTARTED = ("stream", "detect", "narrate", "dashboard", LOAD)  # the generator is not: see Supervisor.check
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
    from obslab.stream.server import SparkServer

    if settings.spark_server == "auto":
        # The lab's one Spark starts while the broker does; the stream connects to it and waits if need be.
        spark = SparkServer(settings).start(wait=False)
        env = {**(env or {}), "SPARK_SERVER": spark.url}
    LocalBroker(settings).start()
    Lab(settings).store  # created and migrated before any stage opens it
    return [spawn(settings, name, cmd, process_env(settings, name, env))
            for name, cmd in commands(settings, dashboard_port).items()]


def process_env(settings: Settings, name: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """What one demo process gets on top of the environment: the demo's `env`, and for the
    generator its lead-in (DEMO_LEAD_IN_SECONDS), so the scenario's first fault comes sooner."""
    own = {"generate": {"GENERATE_LEAD_IN_SECONDS": f"{settings.demo_lead_in_seconds:g}"}}
    return {**(env or {}), **own.get(name, {})}


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
        _signal_group(proc.pid, signal.SIGKILL)
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
    """Restarts the demo's processes that die, each at most `max_restarts` times in a row (a run of `stable_s`
    or more before a death starts the count again), and says what it did."""

    def __init__(self, settings: Settings, started: list[ProcessInfo], max_restarts: int = MAX_RESTARTS,
                 pause_s: float = RESTART_PAUSE_S, stable_s: float = STABLE_S):
        self.settings, self.max_restarts, self.pause_s, self.stable_s = settings, max_restarts, pause_s, stable_s
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
            _signal_group(proc.pid, signal.SIGKILL)
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
            elif name not in RESTARTED:
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


def status(settings: Settings, names: tuple[str, ...] = RECORDED) -> list[ProcessInfo]:
    """Each recorded process (of either demo, by default), alive or not, with the last line of its log."""
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


@dataclass
class StageStatus:
    """What `obslab status` says about one stage: its state, when it last worked and last failed."""

    name: str
    state: str  # a ProcessInfo state, "retrying" (running; its last run failed), or "not started"
    pid: int | None
    restarts: int
    max_restarts: int
    last_success: tuple[datetime, str] | None  # (when, what it did)
    last_error: tuple[datetime, str] | None  # (when, what went wrong)


HEARTBEAT_STAGES = ("detect", "narrate")  # the stages that write DATA_DIR/heartbeats/<stage>.json


def stages(settings: Settings, store=None) -> list[StageStatus]:
    """Each demo stage's state, last success and last error (heartbeats, the run records, the store)."""
    from obslab.errors import ObslabError
    from obslab.health import last_beat

    infos = {p.name: p for p in status(settings)}
    out = []
    for name in RECORDED:
        info = infos.get(name)
        success, errors = None, []
        if name in HEARTBEAT_STAGES:
            try:
                b = last_beat(settings, name)
            except ObslabError as err:
                b, errors = None, [(datetime.now(timezone.utc), str(err))]
            if b is not None:
                success = (b.last_ok_at, b.last_ok_detail) if b.last_ok_at else None
                if b.last_error_at:
                    errors.append((b.last_error_at, b.last_error))
        elif name == "stream" and store is not None:
            success = _last_stream_batch(store)
        if info and info.last_exit and info.last_exit["code"] != 0 and info.last_exit["code"] not in STOPPED:
            errors.append((datetime.fromisoformat(info.last_exit["at"]), describe_exit(info.last_exit)))
        if info is None and success is None and not errors:
            continue
        state = info.state if info else "not started"
        if state == "running" and name in HEARTBEAT_STAGES and errors and (success is None or
                                                                           max(errors)[0] > success[0]):
            state = "retrying"  # alive, but its newest run failed (store locked, broker away): see last error
        out.append(StageStatus(name, state, info.pid if info else None, info.restarts if info else 0,
                               info.max_restarts if info else MAX_RESTARTS, success,
                               max(errors, key=lambda e: e[0]) if errors else None))
    return out


def _last_stream_batch(store) -> tuple[datetime, str] | None:
    """(when, events) of the newest micro-batch the stream applied, if the store can be read now."""
    from obslab.errors import ObslabError

    try:
        rows = store.query("SELECT applied_at, events, dead_letters FROM stream_batches "
                           "ORDER BY applied_at DESC LIMIT 1") if store.path.exists() else []
    except ObslabError:
        return None  # busy or not created yet: the state still shows
    if not rows:
        return None
    at, events, dead = rows[0]
    return at, f"applied a micro-batch of {events:,} events ({dead:,} dead letters)"


def stop(settings: Settings, grace_s: float = 30.0, broker: bool = True,
         names: tuple[str, ...] = RECORDED) -> list[str]:
    """Stop every recorded process group (SIGTERM, then SIGKILL after `grace_s`) and the broker (after an
    OpenTelemetry demo's shop and Collector)."""
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

        if any(info.name == LOAD for info in infos):  # `obslab demo --source spans` was running
            from obslab.demo_otel import stop_services

            stopped += stop_services(settings)
        LocalBroker(settings).stop()
        from obslab.stream.server import SparkServer

        SparkServer(settings).stop()
    return stopped


def run(settings: Settings, stopping, say, scenario: str, backfill_minutes: float, dashboard_port: int,
        minutes: float | None = None, max_restarts: int = MAX_RESTARTS) -> None:
    """`obslab demo`: start every process, then `supervise` them, announcing the first narrated incident."""
    env = {"SCENARIO": scenario, "BACKFILL_MINUTES": str(backfill_minutes), "STREAM_SOURCE": "events"}
    announced: list[tuple[float, str]] = []

    def news(store, began: float) -> list[str]:
        first = None if announced else first_narration(store, began)
        announced.extend([first] if first else [])
        return [f"first incident narrated {first[0]:.0f} s after start: {first[1]}"] if first else []

    supervise(settings, lambda: start(settings, env, dashboard_port), news, stopping, say, dashboard_port, minutes,
              max_restarts)


def supervise(settings: Settings, start_all, news, stopping, say, dashboard_port: int, minutes: float | None = None,
              max_restarts: int = MAX_RESTARTS) -> None:
    """Start a demo (`start_all()` returns its processes), then supervise it until `stopping` (an Event) is set
    (or `minutes` pass, or every process has ended), saying each second what `news(store, began)` finds;
    stop all on the way out. `say(message, err=False)` tells the user (the CLI passes typer.echo)."""
    from obslab.errors import ObslabError

    if any(p.running for p in status(settings)):
        raise ObslabError("a demo is already running (see `obslab status`); stop it with `obslab demo-stop`")
    began = time.time()
    try:
        started = start_all()
    except ObslabError:
        stop(settings)
        raise
    say(f"dashboard: http://127.0.0.1:{dashboard_port}   logs: {settings.logs_dir}   "
        "stop: Ctrl-C or `obslab demo-stop`")
    store = Lab(settings).store
    supervisor = Supervisor(settings, started, max_restarts=max_restarts)
    try:
        while not stopping.wait(1.0):
            for message in supervisor.check():  # a stage that died is restarted (bounded), and we say so
                say(message)
            try:
                for message in news(store, began):
                    say(message)
            except (ObslabError, OSError):  # the store is busy, or the disk full: ask again next second
                pass
            if minutes is not None and time.time() - began > minutes * 60:
                break
            if not supervisor.active:
                say("every demo process has ended (see above and `obslab status`); see the logs", err=True)
                break
    finally:
        say(f"stopping: {', '.join(stop(settings)) or 'nothing was running'}; broker stopped")


def first_narration(store, since: float) -> tuple[float, str] | None:
    """(seconds since `since` (a time.time()), title) of the first incident narrated at or after `since`, if
    there is one: a store kept from an earlier demo holds narratives of its own, which this run did not make."""
    if not store.path.exists():
        return None
    rows = store.query("SELECT min(created_at), arg_min(title, created_at) FROM incident_summaries "
                       "WHERE created_at >= ?", [datetime.fromtimestamp(since, timezone.utc)])
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


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
