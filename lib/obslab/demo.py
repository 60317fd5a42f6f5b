"""The one-command demo: broker, generator (with a fault-free history first), stream, detector,
narrator and dashboard as processes of one lab, and how to see and stop them.

The generator starts DEMO_LEAD_IN_SECONDS into its scenario (GENERATE_LEAD_IN_SECONDS): those
first seconds go out at once after the history, so the scenario's first fault comes that much
sooner after launch, while its event times and ground truth stay the scenario's.

    start(settings)   the lab's Spark server starting (`obslab spark start`, when SPARK_SERVER=auto) and
                      the broker up; each process started in its own session (a process group), its
                      output in DATA_DIR/logs/<name>.log, its pid in DATA_DIR/run/<name>.json
                      (obslab.supervisor.spawn)
    status(settings)  each recorded process: running or not, restarts, how it last ended
    supervise         obslab.supervisor.Supervisor restarts the stages of RESTARTED that die (not the
                      generator: a new run would publish its history and faults again); the generator
                      at the end of its scenario has finished (exit code 0)
    stop(settings)    SIGTERM to every group, SIGKILL after a grace period, then the broker and Spark

`obslab demo` runs start, prints the dashboard's URL and the seconds until the first incident is
narrated, says when a process died and whether it was restarted, then waits for Ctrl-C (or SIGTERM,
or `obslab demo-stop` from elsewhere) and stops all (`supervise`). `obslab demo --source spans`
(obslab.demo_otel) is the same with the shop under load and the Collector instead of the generator.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from obslab.lab import Lab
from obslab.processes import group_alive, reap, signal_group
from obslab.settings import Settings
from obslab.supervisor import (MAX_RESTARTS, ROOT, STOPPED, ProcessInfo, Supervisor, describe_exit, recorded, run_dir,
                               spawn)

PROCESSES = ("stream", "detect", "narrate", "generate", "dashboard")
LOAD = "load"  # `obslab demo --source spans` (obslab.demo_otel) runs Locust's load on the shop instead of the generator
RECORDED = (*PROCESSES, LOAD)  # the processes either demo records: what status, stop and `obslab status` look for
RESTARTED = ("stream", "detect", "narrate", "dashboard", LOAD)  # the generator is not: see Supervisor.check


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


def status(settings: Settings, names: tuple[str, ...] = RECORDED) -> list[ProcessInfo]:
    """Each recorded process (of either demo, by default), alive or not, with the last line of its log."""
    return recorded(settings, names)


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
            signal_group(info.pid, signal.SIGTERM)
            stopped.append(info.name)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(group_alive(i.pid) for i in infos):
        time.sleep(0.2)
    for info in infos:
        if group_alive(info.pid):
            signal_group(info.pid, signal.SIGKILL)
        reap(info.pid)
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
    supervisor = Supervisor(settings, started, RESTARTED, max_restarts=max_restarts)
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


