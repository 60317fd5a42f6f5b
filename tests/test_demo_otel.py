"""`obslab demo --source spans` (`make demo-otel`): the demo's processes with Locust's load in the
generator's place, what it says (how to switch a fault on, when the detectors are warmed up, each
narrated incident), and that `obslab demo-stop` stops its shop and Collector; then (slow) the real
command with its own broker, Collector and shop, stopped by Ctrl-C with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import psutil
import pytest
from typer.testing import CliRunner

from conftest import free_port
from obslab import demo, demo_otel
from obslab.cli import app
from obslab.lab import Lab
from obslab.otel.collector import LocalCollector
from obslab.settings import load_settings
from obslab.shop.run import Shop
from obslab.shop.topology import SERVICES

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc)


@pytest.fixture()
def settings(tmp_path):
    return load_settings(data_dir=tmp_path, duckdb_path=tmp_path / "observability.duckdb", window_seconds=60)


@pytest.fixture()
def store(settings):
    return Lab(settings).store


def _windows(store, counts: dict[str, int], final: bool = True, start: datetime = T0) -> None:
    """`counts[service]` consecutive one-minute windows of each service from `start`."""
    rows = [{"service": service, "window_start": start + timedelta(minutes=i),
             "window_end": start + timedelta(minutes=i + 1), "request_count": 100, "error_count": 0,
             "error_rate": 0.0, "avg_latency_ms": 10.0, "p50_latency_ms": 9.0, "p95_latency_ms": 20.0,
             "p99_latency_ms": 30.0, "is_final": final, "updated_at": start}
            for service, n in counts.items() for i in range(n)]
    if rows:
        store.upsert("service_metrics", rows)


def test_the_load_takes_the_generators_place_and_every_process_counts_spans(settings):
    shop = Shop(settings, {"frontend": 9101, "cart": 9102, "payment": 9103})
    commands = demo_otel.commands(settings, shop, 8599)
    lab = demo.commands(settings, 8599)
    assert list(commands) == ["stream", "detect", "narrate", "load", "dashboard"]  # no generator
    assert all(commands[name] == lab[name] for name in ("stream", "detect", "narrate", "dashboard"))
    load = commands["load"]
    assert load[1:3] == ["-m", "locust"] and "--headless" in load
    assert load[load.index("--host") + 1] == "http://127.0.0.1:9101"  # the shop's frontend
    users = int(load[load.index("-u") + 1])
    assert users == demo_otel.LOAD_USERS
    assert float(load[load.index("--user-rate") + 1]) * users == pytest.approx(demo_otel.LOAD_RATE)
    assert "--run-time" not in load  # it runs until the demo stops it
    assert demo_otel.process_env() == {"STREAM_SOURCE": "spans"}
    assert demo.LOAD in demo.RESTARTED and demo.LOAD in demo.RECORDED  # restarted when it dies, stopped by demo-stop


@pytest.mark.parametrize("counts, warm", [
    ({}, False),  # nothing counted yet
    ({"frontend": 6, "cart": 6}, False),  # payment has no windows yet
    ({"frontend": 6, "cart": 6, "payment": 5}, False),  # one short of WARM_UP_WINDOWS
    ({"frontend": 6, "cart": 6, "payment": 6}, True),  # every service has its history
])
def test_the_detectors_are_warmed_up_once_every_shop_service_has_enough_final_windows(store, counts, warm):
    _windows(store, counts)
    assert demo_otel.warmed_up(store) is warm


def test_open_windows_are_no_history_yet(store):
    _windows(store, {s: demo_otel.WARM_UP_WINDOWS for s in SERVICES}, final=False)
    assert not demo_otel.warmed_up(store)
    assert demo_otel.WARM_UP_WINDOWS == 6  # the detectors' five windows of history, and the first one cut short


def test_services_of_an_earlier_demo_in_the_lookback_are_named(store, settings):
    _windows(store, {"payments": 3, "frontend": 3})
    within = T0 + timedelta(minutes=settings.detect_lookback_minutes)  # the lookback still reaches them
    assert demo_otel.other_services(store, settings, now=within) == ["payments"]  # the shop's own are not named
    assert demo_otel.other_services(store, settings, now=within + timedelta(minutes=10)) == []  # too old to matter


def _narrated(store, incident_id: str, title: str, at: datetime) -> None:
    store.upsert("incident_summaries", [{
        "incident_id": incident_id, "facts_hash": f"{incident_id}-{at:%H%M%S}", "facts": "{}", "title": title,
        "summary": "s", "grounded": True, "backend": "template", "created_at": at}])


def _fault(store, fault_id: str, start: datetime) -> None:
    store.upsert("injected_incidents", [{
        "run_id": "shop-1", "fault_id": fault_id, "scenario": "shop", "fault_type": "error_surge",
        "service": "payment", "start_time": start, "end_time": start + timedelta(minutes=3)}])


def test_each_narrated_incident_is_said_once_with_the_seconds_since_the_latest_fault(store):
    _narrated(store, "frontend:traffic:1", "a traffic blip", T0 + timedelta(seconds=30))  # before any fault
    _fault(store, "001-error_surge-payment", T0 + timedelta(minutes=5))
    _fault(store, "002-error_surge-payment", T0 + timedelta(minutes=20))
    _narrated(store, "payment:errors:1", "errors on payment", T0 + timedelta(minutes=6))
    _narrated(store, "payment:errors:1", "errors on payment, again", T0 + timedelta(minutes=7))  # its facts changed
    seen: set[str] = set()
    said = demo_otel.narrations(store, seen)
    assert [(i, title, after) for i, title, _, after in said] == [
        ("frontend:traffic:1", "a traffic blip", None),  # no fault before it
        ("payment:errors:1", "errors on payment", 60.0),  # first narrated 60 s after fault 001 began (not 002)
    ]
    assert demo_otel.narrations(store, seen) == []  # said once
    _narrated(store, "payment:errors:2", "errors on payment", T0 + timedelta(minutes=21, seconds=15))
    assert [(i, after) for i, _, _, after in demo_otel.narrations(store, seen)] == [("payment:errors:2", 75.0)]


def test_only_incidents_narrated_since_this_run_began_are_said(store):
    _narrated(store, "payment:errors:1", "an earlier demo's incident", T0)
    _narrated(store, "payment:errors:2", "this run's incident", T0 + timedelta(minutes=3))
    said = demo_otel.narrations(store, set(), since=T0 + timedelta(minutes=1))
    assert [(i, title) for i, title, _, _ in said] == [("payment:errors:2", "this run's incident")]


def test_the_demo_says_how_to_switch_a_fault_then_when_the_detectors_are_ready_then_each_narration(store, settings):
    news = demo_otel.News(settings)
    first = news.news(store, time.time())
    assert any(demo_otel.FAULT_HINT in line for line in first)
    assert demo_otel.FAULT_HINT == "obslab shop fault payment error_surge --size 0.3 --seconds 180"
    assert not any("note:" in line for line in first)  # an empty store: no other services
    assert news.news(store, time.time()) == []  # said once
    _windows(store, {s: demo_otel.WARM_UP_WINDOWS for s in SERVICES})
    ready = news.news(store, time.time())
    assert len(ready) == 1 and ready[0].startswith("the detectors have 6 windows of each service")
    _narrated(store, "payment:errors:1", "Errors on payment", T0 + timedelta(minutes=9))
    assert news.news(store, T0.timestamp()) == [  # the run began at T0, before the narration
        "incident narrated at 09:09:00 UTC, no fault switched on: Errors on payment"]


def test_the_fault_hint_is_a_command_that_switches_a_fault(tmp_path):
    env = {"DATA_DIR": str(tmp_path), "DUCKDB_PATH": ""}
    args = demo_otel.FAULT_HINT.split()[1:]  # after `obslab`
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    store = Lab(load_settings(data_dir=tmp_path)).store
    assert store.query("SELECT scenario, fault_type, service, magnitude FROM injected_incidents") == [
        ("shop", "error_surge", "payment", 0.3)]
    faults = json.loads((tmp_path / "shop" / "faults.json").read_text())["faults"]
    assert [(f["service"], f["type"]) for f in faults] == [("payment", "error_surge")]  # what the services read


def test_obslab_demo_with_source_spans_runs_the_opentelemetry_demo(tmp_path, monkeypatch):
    called = {}
    monkeypatch.setattr(demo_otel, "run", lambda settings, *args: called.setdefault("otel", (settings, args)))
    monkeypatch.setattr(demo, "run", lambda settings, *args: called.setdefault("generator", settings))
    env = {"DATA_DIR": str(tmp_path), "DUCKDB_PATH": "", "STREAM_SOURCE": ""}
    result = CliRunner().invoke(app, ["demo", "--source", "spans", "--port", "8599", "--minutes", "2"], env=env)
    assert result.exit_code == 0, result.output
    settings, (_, _, port, minutes, max_restarts) = called["otel"]
    assert (settings.stream_source, port, minutes, max_restarts) == ("spans", 8599, 2.0, 3)
    assert "generator" not in called
    CliRunner().invoke(app, ["demo", "--minutes", "2"], env=env)
    assert called["generator"].stream_source == "events"  # the default: the generator's demo


def test_demo_stop_stops_the_shop_and_collector_only_after_an_opentelemetry_demo(settings, monkeypatch):
    calls = []
    monkeypatch.setattr(demo_otel, "stop_services", lambda s: calls.append(s) or ["shop", "Collector"])
    monkeypatch.setattr("obslab.broker.LocalBroker.stop", lambda self: "broker is not running")
    demo.run_dir(settings).mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "command": [], "log": str(settings.logs_dir / "stream.log")}
    (demo.run_dir(settings) / "stream.json").write_text(json.dumps(record))
    assert demo.stop(settings, grace_s=1) == [] and calls == []  # the generator's demo: no shop, no Collector
    for name in ("stream", "load"):
        (demo.run_dir(settings) / f"{name}.json").write_text(json.dumps(record))
    assert demo.stop(settings, grace_s=1) == ["shop", "Collector"] and calls == [settings]
    assert not list(demo.run_dir(settings).glob("*.json"))


def test_stopping_services_that_never_started_stops_nothing(settings):
    assert demo_otel.stop_services(settings) == []


# ---------------------------------------------------------------------- the real command


def _count(store, sql):
    try:
        return store.query(sql)[0][0] if store.path.exists() else 0
    except Exception:  # noqa: BLE001 - the store may be busy for a moment, or not migrated yet; ask again
        return 0


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_make_demo_otel_counts_the_shops_spans_and_stops_cleanly(tmp_path):
    data = tmp_path / "data"
    kafka, controller, grpc, http, web = (free_port() for _ in range(5))
    ports = {"frontend": free_port(), "cart": free_port(), "payment": free_port()}
    env = {**os.environ, "DATA_DIR": str(data), "KAFKA_PORT": str(kafka), "KAFKA_CONTROLLER_PORT": str(controller),
           "KAFKA_BOOTSTRAP_SERVERS": "", "DUCKDB_PATH": "", "OTLP_GRPC_PORT": str(grpc),
           "OTLP_HTTP_PORT": str(http), "STREAM_SOURCE": ""}
    settings = load_settings(data_dir=data, kafka_port=kafka, kafka_controller_port=controller,
                             kafka_bootstrap_servers="", otlp_grpc_port=grpc, otlp_http_port=http)
    # The shop on free ports first (a running shop is the demo's shop): the defaults may be taken here.
    cli = [sys.executable, "-m", "obslab.cli"]
    started = subprocess.run([*cli, "shop", "start", *[a for s, p in ports.items() for a in (f"--{s}-port", str(p))]],
                             env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    store = Lab(settings).store
    proc = subprocess.Popen([*cli, "demo", "--source", "spans", "--port", str(web), "--minutes", "10"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    counted: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 300  # a bound on a busy machine, not a measurement
        while time.monotonic() < deadline and proc.poll() is None and len(counted) < len(SERVICES):
            counted = {s: n for s in SERVICES if (n := _count(store, "SELECT sum(request_count) FROM service_metrics "
                                                                     f"WHERE service = '{s}'") or 0) > 0}
            time.sleep(2)
        running = {p.name for p in demo.status(settings) if p.running}
        groups = [p.pid for p in demo.status(settings)]
        shop_pids = [Shop(settings).pid(s) for s in SERVICES]
        collector_pid = LocalCollector(settings).pid()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    logs = "\n".join(f"--- {p.name}\n" + p.log.read_text()[-1500:]
                     for p in [demo.ProcessInfo(n, 0, [], settings.logs_dir / f"{n}.log", False, "")
                               for n in ("stream", "detect", "narrate", "load", "dashboard", "otelcol")]
                     if p.log.exists())
    assert set(counted) == set(SERVICES), (counted, out[-2000:], logs)  # every service's spans, in the windows
    assert running == {"stream", "detect", "narrate", "load", "dashboard"}, (running, logs)
    assert f"dashboard: http://127.0.0.1:{web}" in out and demo_otel.FAULT_HINT in out, out
    assert "stopping: stream, detect, narrate, dashboard, load, shop, Collector; broker stopped" in out, out
    assert store.query("SELECT count(*) FROM service_catalog WHERE service IN ('frontend', 'cart', 'payment')") == [(3,)]

    def leftovers() -> list[str]:
        found = [m for pgid in groups for m in
                 subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()]
        for fragment in (str(data / "kafka"), str(data / "shop")):  # the broker, the shop's services
            found += subprocess.run(["pgrep", "-f", fragment], capture_output=True, text=True).stdout.split()
        return found + ([str(collector_pid)] if psutil.pid_exists(collector_pid) else [])

    deadline = time.monotonic() + 30  # a killed process can stay listed for a moment until it is reaped
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers() == [], subprocess.run(["ps", "-o", "pid,stat,cmd", "-p", ",".join(leftovers())],
                                             capture_output=True, text=True).stdout
    assert None not in (*shop_pids, collector_pid) and not list((data / "run").glob("*.json"))
