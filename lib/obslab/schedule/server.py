"""The lab's own Airflow: a home inside the project, loopback only, secrets made once, no default password.

    home(settings)       DATA_DIR/airflow (git-ignored): airflow.cfg, the SQLite metadata database,
                         task logs and the generated admin password
    prepare(settings)    writes airflow.cfg once per install (random secret keys, 0600) and keeps the
                         parts that depend on the project (dags folder, port) current; migrates the DB
    start(settings)      api-server, scheduler and dag-processor as lab processes (see obslab.demo),
                         then waits until the API answers on 127.0.0.1:AIRFLOW_PORT
    stop(settings)       stops them (what `make stop` also does)
    python -m obslab.schedule.server scheduler|dag-processor ...
                         that Airflow command with PRELOAD (or PARSE_PRELOAD) imported first

Choices, each to keep Airflow on the loopback interface and out of other users' reach:
- the API server binds [api] host = 127.0.0.1 (Airflow's default is 0.0.0.0);
- the scheduler runs with --skip-serve-logs: its log server always binds every interface, and the
  API server reads task logs from the local files anyway; no triggerer (no deferrable tasks here);
- the simple auth manager has one user, admin, whose password Airflow generates at first start into
  AIRFLOW_HOME/simple_auth_manager_passwords.json.generated; never all-admins mode.

Choices that make a scheduled run start fast:
- the scheduler imports PRELOAD and the DAG processor PARSE_PRELOAD before Airflow starts. Every task
  process is a fork of one of the scheduler's LocalExecutor workers (themselves forks of the scheduler),
  and every DAG parse a fork of the DAG processor, so they start with papermill, the papermill provider
  and obslab already loaded instead of importing them each time (the provider pulls papermill's cloud
  readers, gcsfs, boto3, azure: seconds per task, and per parse every 30 s); the tasks' notebook
  kernels are forked by the kernels' zygote (obslab.schedule.kernels), with the notebooks' imports done;
- the scheduler's loop sleeps at most [scheduler] scheduler_idle_sleep_time between passes when it
  has nothing to do, so a task is queued well within a second of the one before it ending.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import urlsafe_b64encode
from pathlib import Path

from obslab import demo
from obslab.errors import ObslabError
from obslab.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
PROCESSES = ("airflow-api", "airflow-scheduler", "airflow-dag-processor", "airflow-kernels")
USER = "admin"
# What a task process and a DAG parse import, loaded once by the processes they are forked from.
# What a DAG parse imports, loaded once by the DAG processor its parses are forked from.
PARSE_PRELOAD = ("airflow.sdk.execution_time.task_runner", "airflow.providers.papermill.operators.papermill",
                 "papermill", "nbclient", "black", "obslab.lab", "obslab.schedule.tasks")
# What a task process imports, loaded once by the scheduler its tasks are forked from: a parse's, and
# duckdb and the store, which record the run (pandas stays out: `Store.upsert_row` needs none).
PRELOAD = (*PARSE_PRELOAD, "duckdb", "obslab.store", "obslab.schedule.kernels")


def home(settings: Settings) -> Path:
    return settings.data_dir / "airflow"


def password_file(settings: Settings) -> Path:
    return home(settings) / "simple_auth_manager_passwords.json.generated"


def url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.airflow_port}"


def environment(settings: Settings) -> dict[str, str]:
    """What every Airflow command of the lab runs with (its config file does the rest)."""
    # The lab's settings as the caller saw them, so tasks (and their notebooks) work on the same lab.
    lab = {name.upper(): json.dumps(value) if isinstance(value, (dict, list)) else str(value)
           for name, value in settings.model_dump(mode="json").items() if value is not None}
    return {**lab, "AIRFLOW_HOME": str(home(settings)), "AIRFLOW_CONFIG": str(home(settings) / "airflow.cfg")}


def config(settings: Settings, existing: configparser.ConfigParser | None = None) -> configparser.ConfigParser:
    """airflow.cfg for the lab: secrets kept from `existing` (else made now), the rest from settings."""
    old = existing or configparser.ConfigParser(interpolation=None)

    def keep(section: str, key: str, make) -> str:
        return old.get(section, key, fallback=None) or make()

    cfg = configparser.ConfigParser(interpolation=None)
    cfg["core"] = {
        "dags_folder": str(ROOT / "dags"),
        "load_examples": "False",
        "executor": "LocalExecutor",
        "parallelism": "4",
        "fernet_key": keep("core", "fernet_key", lambda: urlsafe_b64encode(os.urandom(32)).decode()),
        "simple_auth_manager_users": f"{USER}:admin",
        "simple_auth_manager_all_admins": "False",
        "execution_api_server_url": f"{url(settings)}/execution/",
    }
    cfg["api"] = {
        "host": "127.0.0.1",
        "port": str(settings.airflow_port),
        "base_url": url(settings),
        "workers": "1",
        "secret_key": keep("api", "secret_key", lambda: secrets.token_urlsafe(64)),
    }
    cfg["api_auth"] = {"jwt_secret": keep("api_auth", "jwt_secret", lambda: secrets.token_urlsafe(64))}
    cfg["scheduler"] = {"enable_health_check": "False"}
    cfg["dag_processor"] = {"refresh_interval": "30", "min_file_process_interval": "30"}
    cfg["logging"] = {"base_log_folder": str(home(settings) / "logs")}
    return cfg


def prepare(settings: Settings, migrate: bool = True) -> Path:
    """Write (or refresh) AIRFLOW_HOME/airflow.cfg, keeping its secrets, and migrate the metadata DB."""
    path = home(settings) / "airflow.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = configparser.ConfigParser(interpolation=None)
    if path.exists():
        existing.read(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# Written by obslab (obslab.schedule.server); secrets are made once per install.\n")
        config(settings, existing).write(out)
    os.chmod(path, 0o600)
    if migrate:
        airflow(settings, "db", "migrate")
    return path


def airflow(settings: Settings, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one `airflow ...` command of the lab's Airflow; an error says what failed and where."""
    cmd = [str(Path(sys.executable).with_name("airflow")), *args]
    done = subprocess.run(cmd, env={**os.environ, **environment(settings)}, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise ObslabError(f"`airflow {' '.join(args)}` failed (exit {done.returncode}):\n" + "\n".join(tail))
    return done


def start(settings: Settings, timeout_s: float = 240.0) -> str:
    """Start the API server, scheduler and DAG processor; returns how to log in once the UI answers."""
    from obslab.processes import port_is_free

    if any(p.running for p in demo.status(settings, PROCESSES)):
        raise ObslabError(f"Airflow is already running (see `obslab airflow status`); it answers at {url(settings)}")
    if not port_is_free("127.0.0.1", settings.airflow_port):
        raise ObslabError(f"port {settings.airflow_port} on 127.0.0.1 is in use: stop what holds it or set AIRFLOW_PORT")
    prepare(settings)
    env = environment(settings)
    for name, cmd in commands(settings).items():
        demo.spawn(settings, name, cmd, env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers(settings) and password_file(settings).exists():
            return login_help(settings)
        if not all(p.running for p in demo.status(settings, PROCESSES)):
            stop(settings)
            raise ObslabError(f"an Airflow process exited while starting; see {settings.logs_dir}/airflow-*.log")
        time.sleep(1.0)
    stop(settings)
    raise ObslabError(f"Airflow did not answer at {url(settings)} within {timeout_s:.0f} s; "
                      f"see {settings.logs_dir}/airflow-api.log")


def commands(settings: Settings) -> dict[str, list[str]]:
    """The command of each Airflow process of the lab; the scheduler and DAG processor preloaded, and the
    zygote the tasks' notebook kernels are forked from (obslab.schedule.kernels)."""
    from obslab.schedule.kernels import socket_path

    preloaded = [sys.executable, "-m", "obslab.schedule.server"]
    return {"airflow-api": [str(Path(sys.executable).with_name("airflow")), "api-server"],
            "airflow-scheduler": [*preloaded, "scheduler", "--skip-serve-logs"],
            "airflow-dag-processor": [*preloaded, "dag-processor"],
            "airflow-kernels": [sys.executable, "-Xfrozen_modules=off", "-m", "obslab.schedule.kernels",
                                str(socket_path(settings))]}


def answers(settings: Settings) -> bool:
    """True when the API server's health endpoint answers."""
    try:
        with urllib.request.urlopen(f"{url(settings)}/api/v2/monitor/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def password(settings: Settings) -> str:
    """The admin password Airflow generated at its first start."""
    return json.loads(password_file(settings).read_text())[USER]


def login_help(settings: Settings) -> str:
    return (f"Airflow: {url(settings)} (127.0.0.1 only)   user: {USER}   password: in "
            f"{password_file(settings)} (generated once; `obslab airflow password` prints it)   "
            f"logs: {settings.logs_dir}/airflow-*.log   stop: `make stop`")


def status(settings: Settings) -> list[demo.ProcessInfo]:
    return demo.status(settings, PROCESSES)


def stop(settings: Settings) -> list[str]:
    """Stop the lab's Airflow processes (not the broker)."""
    return demo.stop(settings, grace_s=30.0, broker=False, names=PROCESSES)


def run_preloaded(args: list[str]) -> int:
    """`airflow ARGS` in this process, with PRELOAD imported first (the scheduler; PARSE_PRELOAD for the DAG
    processor, which runs no task)."""
    import importlib

    for module in PARSE_PRELOAD if args[:1] == ["dag-processor"] else PRELOAD:
        importlib.import_module(module)
    import nbformat

    nbformat.validate(nbformat.v4.new_notebook())  # compiles the notebook schema papermill validates with
    from airflow.__main__ import main

    sys.argv = ["airflow", *args]
    return main() or 0


if __name__ == "__main__":
    sys.exit(run_preloaded(sys.argv[1:]))
