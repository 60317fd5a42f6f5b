"""The container lab's entry point: one image, one service per container (compose.yaml).

    python containers/service.py run NAME      start service NAME in the foreground
    python containers/service.py health NAME   exit 0 when NAME is healthy, else 1 with the reason

Services:
    broker                          the local Kafka broker (`obslab broker start`), after migrating the
                                    store; kept in the foreground, stopped cleanly on SIGTERM
    generate stream detect narrate  the processes of `make demo`, run with the very commands
    dashboard                       obslab.demo.commands gives it, so the two labs cannot drift; each
                                    waits for the broker (and so for the migrated store) first. The
                                    stream container also runs the lab's one Spark (`obslab spark
                                    start`, on its service name): the stream, Airflow's tasks and
                                    JupyterLab's notebooks are its clients (SPARK_SERVER), no JVM each
    airflow                         `obslab airflow start` (API server, scheduler, DAG processor, kernels' zygote)
    lab                             JupyterLab with a token (printed in its log)

Only what a container publishes listens on every interface inside it (dashboard, airflow, lab); the
compose file publishes those on 127.0.0.1 of the host. The broker listens on its service's name on
the project network; Spark on every interface of the stream container (its sink's worker connects
back on localhost), published by nothing.
Health means more than "the process runs": the broker answers with the lab topics; the generator has
published events; the stream has committed a micro-batch, the detector and the narrator have
finished a pass since this container started; the web services answer HTTP.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from obslab.errors import ObslabError
from obslab.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]

DEMO = ("generate", "stream", "detect", "narrate", "dashboard")
SERVICES = ("broker", *DEMO, "airflow", "lab")
DASHBOARD_PORT = 8501  # inside the container; compose.yaml maps it to DASHBOARD_PORT on 127.0.0.1
LAB_PORT = 8888
STARTED = Path("/tmp/obslab-service-started")  # container-local: when this container's service began
BROKER_WAIT_S = 600.0


def stop_event() -> threading.Event:
    """An event set by SIGTERM (podman stop) or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def broker_topics(settings: Settings) -> dict:
    """topic -> partition -> end offset of the lab topics that exist (raises when the broker is away)."""
    from obslab.broker import end_offsets

    return end_offsets(settings, settings.topics)


def wait_for_broker(settings: Settings, stop: threading.Event) -> bool:
    """Wait until the broker answers with every lab topic; False when stopped or out of time."""
    deadline = time.monotonic() + BROKER_WAIT_S
    said = False
    while time.monotonic() < deadline:
        try:
            if len(broker_topics(settings)) == len(settings.topics):
                return True
        except Exception as err:  # noqa: BLE001 - the broker is not up yet: wait
            if not said:
                print(f"waiting for the broker at {settings.kafka_bootstrap_servers} ({type(err).__name__})",
                      flush=True)
                said = True
        if stop.wait(2.0):
            return False
    print(f"error: the broker at {settings.kafka_bootstrap_servers} did not answer with the lab topics "
          f"within {BROKER_WAIT_S:.0f} s; see the broker's log (podman logs, DATA_DIR/logs/kafka.log)", flush=True)
    return False


def run_broker(settings: Settings) -> int:
    from obslab.broker import LocalBroker, tail
    from obslab.store import Store

    stop = stop_event()
    applied = Store.from_settings(settings).migrate()
    print(f"store {settings.duckdb_path}: " + (f"applied migrations {applied}" if applied else "up to date"),
          flush=True)
    broker = LocalBroker(settings)
    print(broker.start().message, flush=True)
    while not stop.wait(5.0):
        if broker.pid() is None:
            print(f"error: the broker exited; last lines of {broker.log_file}:\n{tail(broker.log_file)}", flush=True)
            return 1
    print(broker.stop(), flush=True)
    return 0


def run_stream(settings: Settings) -> int:
    """The lab's Spark server, then the demo's stream as its client; both stopped on SIGTERM."""
    import subprocess

    from obslab.stream.server import SparkServer

    stop = stop_event()
    server = SparkServer(settings)
    server.pid_file.unlink(missing_ok=True)  # a record of an earlier container: another pid namespace
    print(server.start().message, flush=True)
    stream = subprocess.Popen(demo_command(settings, "stream"))
    code = None
    while code is None and not stop.wait(2.0):
        code = stream.poll()
        if code is None and server.pid() is None:
            print(f"error: the Spark server exited; see {server.log_file}", flush=True)
            code = 1
    if stream.poll() is None:
        stream.terminate()
        code = stream.wait(timeout=60)
    print(server.stop(), flush=True)
    return code or 0


def run_airflow(settings: Settings) -> int:
    from obslab import demo
    from obslab.schedule import server

    stop = stop_event()
    # Records left in the volume by an earlier container name pids of another pid namespace: this
    # container has just started, so none of them runs here.
    for name in server.PROCESSES:
        (demo.run_dir(settings) / f"{name}.json").unlink(missing_ok=True)
    # Published from the container, so its API listens on every interface inside it (env beats airflow.cfg).
    os.environ["AIRFLOW__API__HOST"] = "0.0.0.0"
    print(server.start(settings), flush=True)
    while not stop.wait(5.0):
        dead = [p.name for p in server.status(settings) if not p.running]
        if dead:
            print(f"error: {', '.join(dead)} exited; see {settings.logs_dir}/airflow-*.log", flush=True)
            server.stop(settings)
            return 1
    print(f"stopped: {', '.join(server.stop(settings))}", flush=True)
    return 0


def demo_command(settings: Settings, name: str) -> list[str]:
    """The command `make demo` runs for `name`; the dashboard listens on every interface to be published."""
    from obslab import demo

    cmd = list(demo.commands(settings, DASHBOARD_PORT)[name])
    if "--server.address" in cmd:
        cmd[cmd.index("--server.address") + 1] = "0.0.0.0"
    return cmd


def lab_command() -> list[str]:
    """JupyterLab as `make lab` runs it, on every interface of the container; Jupyter makes the token."""
    return [str(Path(sys.executable).with_name("jupyter")), "lab", "--ip", "0.0.0.0", "--port", str(LAB_PORT),
            "--no-browser", "--allow-root", "--notebook-dir", str(ROOT), "--ServerApp.port_retries=0"]


def run(name: str) -> int:
    settings = load_settings()
    os.chdir(ROOT)
    STARTED.write_text(datetime.now(timezone.utc).isoformat() + "\n")
    if name == "broker":
        return run_broker(settings)
    if not wait_for_broker(settings, stop_event()):
        return 1
    if name == "airflow":
        return run_airflow(settings)
    if name == "stream":
        return run_stream(settings)
    cmd = lab_command() if name == "lab" else demo_command(settings, name)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execv(cmd[0], cmd)  # the service becomes this process: tini hands it SIGTERM


# ---------------------------------------------------------------------- health


def started_at() -> float:
    """When this container's service started (epoch seconds); 0 when unknown."""
    try:
        return STARTED.stat().st_mtime
    except OSError:
        return 0.0


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def health(name: str) -> tuple[bool, str]:
    """(healthy, why) of service `name` in this container."""
    from obslab.health import last_beat

    settings = load_settings()
    if name == "broker":
        topics = broker_topics(settings)
        missing = sorted(set(settings.topics) - set(topics))
        return not missing, f"topics missing: {missing}" if missing else "answers with every lab topic"
    if name == "generate":
        published = sum(broker_topics(settings).get(settings.topic_raw_events, {}).values())
        return published > 0, f"{published} events in {settings.topic_raw_events}"
    if name == "stream":
        from obslab.stream.job import checkpoint_path

        commits = checkpoint_path(settings) / "spark" / "commits"  # Spark's log of finished micro-batches
        newest = max((p.stat().st_mtime for p in commits.glob("[0-9]*")), default=0.0) if commits.is_dir() else 0.0
        ok = newest >= started_at() > 0
        return ok, "committed a micro-batch since it started" if ok else "no micro-batch committed since it started"
    if name in ("detect", "narrate"):
        beat = last_beat(settings, name)
        ok = beat is not None and beat.last_ok_at is not None and beat.last_ok_at.timestamp() >= started_at() > 0
        return ok, (f"last pass {beat.last_ok_at:%H:%M:%S}: {beat.last_ok_detail}" if ok
                    else f"no successful pass since it started (last error: {beat.last_error if beat else '-'})")
    if name == "dashboard":
        ok = answers(f"http://127.0.0.1:{DASHBOARD_PORT}/_stcore/health")
        return ok, "answers" if ok else "does not answer"
    if name == "airflow":
        from obslab.schedule import server

        ok = server.answers(settings)
        return ok, "answers" if ok else "does not answer"
    if name == "lab":
        ok = answers(f"http://127.0.0.1:{LAB_PORT}/api")
        return ok, "answers" if ok else "does not answer"
    raise ValueError(name)


def main(argv: list[str]) -> int:
    if argv in ([], ["--help"], ["-h"]):
        print(__doc__)
        return 0
    if len(argv) != 2 or argv[0] not in ("run", "health") or argv[1] not in SERVICES:
        print(f"usage: service.py run|health NAME, NAME one of {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    action, name = argv
    try:
        if action == "run":
            return run(name)
        ok, why = health(name)
    except ObslabError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except Exception as err:  # noqa: BLE001 - a health check reports, it does not crash
        if action == "run":
            raise
        ok, why = False, f"{type(err).__name__}: {err}"
    print(f"{name}: {'healthy' if ok else 'unhealthy'}: {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
