"""`obslab ...` entry points: declarations and wiring only. Every option backed by a setting is
made from that setting (`setting`), so its environment variable and help cannot drift from Settings."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import typer

from obslab.book import book_app
from obslab.broker_cli import broker_app
from obslab.cluster import cluster_app
from obslab.commands import AS_JSON, ReportingTyper, fail, flag, setting, settings_with
from obslab.errors import ObslabError
from obslab.lab import Lab
from obslab.otel.cli import otelcol_app
from obslab.settings import Settings, settings_table
from obslab.shop.cli import shop_app
from obslab.store_cli import store_app
from obslab.stream.cli import spark_app

log = logging.getLogger(__name__)


app = ReportingTyper(help="obslab: a lab for streaming observability.", no_args_is_help=True, pretty_exceptions_enable=False)
airflow_app = ReportingTyper(help="The lab's Airflow (scheduled notebooks), on 127.0.0.1 only.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(store_app, name="store")
app.add_typer(airflow_app, name="airflow")
app.add_typer(shop_app, name="shop")
app.add_typer(otelcol_app, name="otelcol")
app.add_typer(spark_app, name="spark")
app.add_typer(book_app, name="book")
app.add_typer(cluster_app, name="cluster")


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An Event that SIGINT (Ctrl-C) or SIGTERM sets, so a long-running command ends cleanly; the
    previous handlers come back afterwards."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _checks(checks, label) -> None:
    """One line per check: ok or FAIL, then `label(check)`."""
    for c in checks:
        mark = typer.style("ok  ", fg=typer.colors.GREEN) if c.ok else typer.style("FAIL", fg=typer.colors.RED)
        typer.echo(f"{mark} {label(c)}")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log more")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ------------------------------------------------------------------ generator

@app.command("generate")
def generate_cmd(
    scenario: str = setting("scenario"),
    rate: float = setting("events_per_second", "--rate"),
    duration: float = typer.Option(None, "--duration", help="seconds of event time (default: the scenario's)"),
    count: int = typer.Option(None, "--count", help="stop after this many events"),
    seed: int = setting("seed"),
    backfill_minutes: float = setting("backfill_minutes"),
    start: str = setting("generate_start", "--start"),
    max_rate: bool = flag("simulated time, as fast as possible (benchmarks)", "--max-rate"),
    to_file: str = typer.Option(None, "--to-file", help="write JSONL here instead of publishing to Kafka"),
    realtime: bool = flag("with --to-file: wait like a live run", "--realtime"),
    no_store: bool = flag("ground truth beside the file, not in the store", "--no-store"),
    as_json: bool = AS_JSON,
) -> None:
    """Simulate the scenario's services (traffic, faults, benign events) into Kafka or a file."""
    from pathlib import Path

    from obslab.generator.run import RunPlan, generate, parse_start

    settings = settings_with(scenario=scenario, events_per_second=rate, seed=seed, backfill_minutes=backfill_minutes,
                         generate_start=start)
    if no_store and not to_file:
        raise ObslabError("--no-store needs --to-file: ground truth has to go somewhere")
    plan = RunPlan(to_file=Path(to_file) if to_file else None, realtime=realtime, max_rate=max_rate,
                   store_truth=not no_store, duration_s=duration, count=count,
                   start=parse_start(settings.generate_start))

    def progress(report) -> None:
        typer.echo(f"\r{report.progress_line()}", err=True, nl=False)

    with Lab(settings) as lab, stop_signals() as stop:
        report, backfill = generate(plan, settings, store=lab.store if plan.store_truth else None,
                                    sink=None if plan.to_file else lab.events, stop=stop,
                                    progress=None if as_json else progress)
    if as_json:
        typer.echo(json.dumps({"run": report.as_dict(), "backfill": backfill.as_dict() if backfill else None}))
    else:
        if backfill:
            typer.echo(f"\nbackfill: {backfill.events_sent:,} events before {report.started_at:%H:%M:%S}Z", err=True)
        typer.echo(f"\n{report.describe()}")
        if report.first_error:
            typer.echo(f"first error: {report.first_error}", err=True)
    raise typer.Exit(code=1 if report.events_failed or (backfill and backfill.events_failed) else 0)


# ------------------------------------------------------------------ stream

@app.command("stream")
def stream_cmd(
    available_now: bool = flag("process what is new since the last checkpoint, then exit", "--available-now"),
    trigger_seconds: float = setting("trigger_seconds"),
    run_for_seconds: float = typer.Option(None, "--run-for-seconds", help="stop after this long (continuous mode)"),
    window_seconds: int = setting("window_seconds"),
    watermark_seconds: int = setting("watermark_seconds"),
    checkpoint_name: str = setting("checkpoint_name"),
    source: str = setting("stream_source", "--source"),
    max_offsets_per_trigger: int = setting("max_offsets_per_trigger"),
    as_json: bool = AS_JSON,
) -> None:
    """Aggregate raw_events (or, --source spans, the Collector's OpenTelemetry spans) into per-window
    service and endpoint metrics in the store (Spark)."""
    from obslab.stream.job import run_stream_job

    settings = settings_with(trigger_seconds=trigger_seconds, window_seconds=window_seconds,
                         watermark_seconds=watermark_seconds, checkpoint_name=checkpoint_name,
                         stream_source=source, max_offsets_per_trigger=max_offsets_per_trigger)
    with Lab(settings) as lab, stop_signals() as stop:
        report = run_stream_job(settings, spark=lab.spark, store=lab.store, feeds=lab.feeds, available_now=available_now,
                                run_for_seconds=run_for_seconds, stop=stop)
    typer.echo(json.dumps(report.as_dict()) if as_json else report.describe())


# ------------------------------------------------------------------ detection

@app.command("detect")
def detect_cmd(
    once: bool = flag("one run, then exit (scheduled runs)", "--once"),
    poll_seconds: float = setting("detect_poll_seconds", "--poll-seconds"),
    no_publish: bool = flag("do not publish incidents to Kafka", "--no-publish"),
    as_json: bool = AS_JSON,
) -> None:
    """Find anomalies in the stored windows and group them into incidents (idempotent)."""
    from obslab.detect.run import DetectState, detect_pass

    lab = Lab(settings_with(detect_poll_seconds=poll_seconds))
    settings, store, state = lab.settings, lab.store, DetectState()

    def step() -> None:
        report = detect_pass(store, settings, state, feeds=None if no_publish else lab.feeds)
        typer.echo(json.dumps({**report.as_dict(), "published": state.published}) if as_json else report.describe())

    with lab:
        _repeat(step, "detect", settings, once, settings.detect_poll_seconds)


def _repeat(step, stage: str, settings: Settings, once: bool, poll_seconds: float) -> None:
    """obslab.retry.repeat_stage until SIGINT or SIGTERM."""
    from obslab.retry import repeat_stage

    with stop_signals() as stop:
        repeat_stage(step, stage, settings, once, poll_seconds, stop)


@app.command("detect-series")
def detect_series_cmd(
    csv_path: str = typer.Option(..., "--csv", help="CSV file with a time column and a value column"),
    time_col: str = typer.Option(..., "--time-col", help="column of ISO-8601 times (all with a UTC offset, or none)"),
    value_col: str = typer.Option(..., "--value-col", help="column of numbers"),
    z: float = typer.Option(5.0, "--z", min=0.5, help="a spike is this many robust standard deviations from its "
                                                      "prediction (the series' own setting, not SHIFT_Z)"),
    period: int = typer.Option(None, "--period", min=0,
                               help="season length in time steps (e.g. 24 for a daily rhythm of hourly points); "
                                    "0: no seasonality; default: detect it"),
    timestamps: str = typer.Option("mean", "--timestamps",
                                   help="unsorted or repeated times: sort and combine rows of one instant by their "
                                        "mean | sum | first | last, or strict: refuse them"),
    as_json: bool = typer.Option(False, "--json", help='print {"series": ..., "alerts": [...] (one per episode, '
                                                       'at its start), "episodes": [...], "anomalies": [...]}'),
    all_points: bool = typer.Option(False, "--all-points", help='with --json: add "points", every point with its '
                                                                "expected value and score"),
) -> None:
    """Find anomalous episodes (spikes, level shifts) in any single metric series, seasonality included."""
    from pathlib import Path

    from obslab.detect.series import detect_csv

    result = detect_csv(Path(csv_path), time_col, value_col, z, period, timestamps)
    if as_json:
        typer.echo(json.dumps(result.as_dict(all_points)))
        return
    typer.echo(result.header(), err=True)  # stdout keeps one line per episode
    for line in result.episode_lines():
        typer.echo(line)
    typer.echo(result.footer(z), err=True)


@app.command("narrate")
def narrate_cmd(
    once: bool = flag("one pass over the pending incidents, then exit", "--once"),
    backend: str = setting("narrator_backend", "--backend"),
    limit: int = setting("narrate_max_incidents", "--limit"),
    as_json: bool = AS_JSON,
) -> None:
    """Explain new or changed incidents in plain words (local model or template), grounded in the facts."""
    from obslab.jsonform import plain
    from obslab.narrate.run import narrate_pending

    lab = Lab(settings_with(narrator_backend=backend, narrate_max_incidents=limit))
    settings, store = lab.settings, lab.store
    try:
        chosen, why = lab.narrator, lab.narrator_choice
    except ValueError as err:
        raise ObslabError(str(err)) from err
    typer.echo(f"narrator backend: {why}", err=True)
    warmed_in = chosen.warm_up()
    if warmed_in is not None:
        typer.echo(f"model loaded and warmed up in {warmed_in:.1f} s", err=True)

    def step() -> None:
        for n in narrate_pending(store, chosen, settings, settings.narrate_max_incidents):
            r = n.row
            if as_json:
                typer.echo(json.dumps(plain(r)))
            else:
                mark = "" if r["fallback_reason"] is None else f"  [template: {r['fallback_reason']}]"
                typer.echo(f"{r['incident_id']} ({r['backend']}, {r['latency_ms']:.0f} ms): {r['summary']}{mark}")

    _repeat(step, "narrate", settings, once, settings.narrate_poll_seconds)


@app.command("evaluate")
def evaluate_cmd(
    scenario: list[str] = typer.Option(..., "--scenario", help="a shipped scenario name, a path to a YAML file, "
                                                               "or `all` (every shipped scenario); repeatable"),
    seed: list[int] = typer.Option(None, "--seed", help="random seed (default: SEED); repeatable"),
    events_per_second: float = typer.Option(None, "--events-per-second", help="rate (default: the scenario's)"),
    minutes: float = typer.Option(None, "--minutes", help="simulated length (default: the scenario's)"),
    workers: int = typer.Option(1, "--workers", min=1, help="processes for generation and replay (several runs)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON (keys: docs/evaluation.md)"),
) -> None:
    """Measure detection against the injected faults: in time, late, merged, missed, TTD, precision per type."""
    from obslab.evaluation import EvaluationRun, evaluate, evaluate_many, pool, type_table
    from obslab.generator.scenario import available_scenarios

    names = [n for name in scenario for n in (available_scenarios() if name == "all" else [name])]
    settings = settings_with()
    seeds = seed or [settings.seed]
    if len(names) * len(seeds) == 1:
        reports = [evaluate(names[0], settings, seed=seeds[0], events_per_second=events_per_second, minutes=minutes)]
    else:
        reports = evaluate_many([EvaluationRun(n, s, events_per_second, minutes) for n in names for s in seeds],
                                settings, workers=workers)
    pooled = pool(reports)
    if as_json:
        out = reports[0].as_dict() if len(reports) == 1 else {"runs": [r.as_dict() for r in reports], "pooled": pooled}
        typer.echo(json.dumps(out))
        return

    for report in reports:
        typer.echo(report.describe(each_fault=len(reports) == 1))
    typer.echo("")
    typer.echo(type_table(pooled))


# ------------------------------------------------------------------ the demo

@app.command("demo")
def demo_cmd(
    scenario: str = setting("scenario"),
    backfill_minutes: float = typer.Option(10.0, "--backfill-minutes", help="fault-free history first, for baselines "
                                                                              "(the demo's own default, not BACKFILL_MINUTES)"),
    port: int = typer.Option(8501, "--port", help="dashboard port on 127.0.0.1"),
    minutes: float = typer.Option(None, "--minutes", help="stop by itself after this long (default: at Ctrl-C)"),
    max_restarts: int = typer.Option(3, "--max-restarts", min=0, help="restarts of each stage that dies, at most"),
    source: str = setting("stream_source", "--source"),
) -> None:
    """Start the whole pipeline (broker, generator, stream, detector, narrator, dashboard); Ctrl-C stops it.
    --source spans (make demo-otel): the Collector and the shop under Locust's load instead of the generator."""
    from obslab import demo, demo_otel

    settings = settings_with(scenario=scenario, stream_source=source)
    with stop_signals() as stop:
        if settings.stream_source == "spans":
            demo_otel.run(settings, stop, typer.echo, port, minutes, max_restarts)
        else:
            demo.run(settings, stop, typer.echo, settings.scenario, backfill_minutes, port, minutes, max_restarts)


@app.command("demo-stop")
def demo_stop_cmd() -> None:
    """Stop a demo started elsewhere (every recorded process, then the broker)."""
    from obslab import demo

    stopped = demo.stop(settings_with())
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}; broker stopped")


# ------------------------------------------------------------------ airflow

@airflow_app.command("start")
def airflow_start(port: int = setting("airflow_port", "--port")) -> None:
    """Start Airflow's API server, scheduler and DAG processor with the project's DAGs; wait until it answers."""
    from obslab.schedule import server

    typer.echo(server.start(settings_with(airflow_port=port)))


@airflow_app.command("stop")
def airflow_stop() -> None:
    """Stop the lab's Airflow processes."""
    from obslab.schedule import server

    typer.echo(f"stopped: {', '.join(server.stop(settings_with())) or 'nothing was running'}")


@airflow_app.command("status")
def airflow_status() -> None:
    """The lab's Airflow processes, and whether the UI answers. Exit code 1 when it does not."""
    from obslab.schedule import server

    settings = settings_with()
    for p in server.status(settings):
        typer.echo(f"{p.name:<22} {'running' if p.running else 'exited '} pid {p.pid:<8} {p.last_line[:100]}")
    ok = server.answers(settings)
    typer.echo(f"{server.url(settings)}: {'answers' if ok else 'does not answer'}")
    raise typer.Exit(code=0 if ok else 1)


@airflow_app.command("password")
def airflow_password() -> None:
    """Print the admin password Airflow generated at its first start."""
    from obslab.schedule import server

    settings = settings_with()
    try:
        typer.echo(server.password(settings))
    except FileNotFoundError:
        raise ObslabError(f"no password yet at {server.password_file(settings)}: start Airflow once (`make airflow`)")


@app.command("status")
def status_cmd() -> None:
    """Each stage of the demo: its state, restarts, last success and last error."""
    from obslab import demo
    from obslab.store import Store

    settings = settings_with()
    # A short lock timeout: a busy store must not hang the status; the stream's line then lacks its last batch.
    found = demo.stages(settings, Store(settings.duckdb_path, lock_timeout_s=2.0))
    if not found:
        typer.echo("no demo process recorded and no stage has run here (start one with `make demo`)")
    colours = {"running": typer.colors.GREEN, "finished": typer.colors.GREEN, "retrying": typer.colors.YELLOW,
               "restarting": typer.colors.YELLOW}

    def when(at: datetime) -> str:
        return f"{at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"

    for s in found:
        state = typer.style(f"{s.state:<11}", fg=colours.get(s.state, typer.colors.RED))
        pid = f"pid {s.pid:<8}" if s.pid else " " * 12
        restarts = f"restarted {s.restarts} of at most {s.max_restarts} times" if s.restarts else ""
        typer.echo(f"{s.name:<10} {state} {pid} {restarts}".rstrip())
        typer.echo(f"{'':<10} last success  " + (f"{when(s.last_success[0])}: {s.last_success[1]}"
                                                  if s.last_success else "-"))
        typer.echo(f"{'':<10} last error    " + (f"{when(s.last_error[0])}: {s.last_error[1]}"
                                                  if s.last_error else "-"))


# ------------------------------------------------------------------ data quality

@app.command("quality")
def quality_cmd(
    as_json: bool = flag("print the checks, deletions and file sizes as JSON", "--json"),
    no_retention: bool = flag("only check: delete and compact nothing", "--no-retention"),
    retention_days: int = setting("retention_days"),
    window_seconds: int = setting("window_seconds"),
) -> None:
    """Check the store's data-quality rules and record them, then apply retention and compact. Exit 1 when a rule fails."""
    from obslab import quality

    settings = settings_with(retention_days=retention_days, window_seconds=window_seconds)
    store = Lab(settings).store
    now = datetime.now(timezone.utc)
    run_id = quality.new_run_id(now)
    checks = quality.validate(store, settings, now)
    quality.record(store, run_id, checks, now)
    # Retention runs even when a rule failed: the store must stay bounded when the data is bad.
    deleted = {} if no_retention else quality.apply_retention(store, settings, now)
    sizes = None if no_retention else quality.compact(store)
    failed = [c for c in checks if not c.ok]
    if as_json:
        typer.echo(json.dumps({"run_id": run_id, "ok": not failed, "checks": [vars(c) for c in checks],
                               "deleted": deleted, "file_bytes": None if sizes is None else
                               {"before": sizes[0], "after": sizes[1]}}))
    else:
        _checks(checks, lambda c: f"{c.name:<28} {c.message}")
        if sizes is not None:
            gone = ", ".join(f"{t} {n}" for t, n in deleted.items() if n) or "nothing"
            typer.echo(f"retention ({settings.retention_days} days): deleted {gone}; "
                       f"file {sizes[0]:,} -> {sizes[1]:,} bytes")
        typer.echo(f"run {run_id}: {len(checks) - len(failed)} of {len(checks)} rules passed")
    raise typer.Exit(code=1 if failed else 0)


# ------------------------------------------------------------------ monitoring

@app.command("health")
def health_cmd(
    as_json: bool = flag("print the checks as JSON", "--json"),
    no_record: bool = flag("do not write the results to health_checks", "--no-record"),
    health_max_lag_events: int = setting("health_max_lag_events"),
    health_max_freshness_seconds: float = setting("health_max_freshness_seconds"),
    health_max_dead_letter_rate: float = setting("health_max_dead_letter_rate"),
    health_max_stage_age_seconds: float = setting("health_max_stage_age_seconds"),
    backend: str = setting("narrator_backend", "--backend"),
) -> None:
    """Check broker, stream lag, freshness, dead letters, detector, narrator and its model; exit 1 when one fails."""
    from obslab import health

    settings = settings_with(health_max_lag_events=health_max_lag_events,
                         health_max_freshness_seconds=health_max_freshness_seconds,
                         health_max_dead_letter_rate=health_max_dead_letter_rate,
                         health_max_stage_age_seconds=health_max_stage_age_seconds, narrator_backend=backend)
    from obslab.store import Store

    store = Store.from_settings(settings)  # checked as it is: a lab with no store yet is a finding, not created
    now = datetime.now(timezone.utc)
    run_id = health.new_run_id(now)
    checks = health.run_checks(settings, store, now)  # never raises: a broken check is a failed one
    not_recorded = None
    if not no_record:
        try:
            health.record(Lab(settings).store, run_id, checks, now)
        except ObslabError as err:  # still show the checks, then fail
            not_recorded = err
    if as_json:
        typer.echo(json.dumps({"run_id": run_id, "ok": all(c.ok for c in checks),
                               "recorded": not no_record and not_recorded is None,
                               "checks": [vars(c) for c in checks]}))
    else:
        _checks(checks, lambda c: f"{c.name:<17} {health.number(c.value):>10} {health.number(c.bound):>10}  {c.message}")
        failed = sum(not c.ok for c in checks)
        typer.echo(f"run {run_id}: {len(checks) - failed} of {len(checks)} checks passed"
                   + (" (recorded in health_checks)" if not no_record and not_recorded is None else ""))
    if not_recorded is not None:
        raise not_recorded
    raise typer.Exit(code=0 if all(c.ok for c in checks) else 1)


# ------------------------------------------------------------------ doctor

@app.command("doctor")
def doctor(broker: bool = flag("also check that the Kafka brokers answer", "--broker")) -> None:
    """Check Python, Java, the cached jars, the data folder (and the broker). Exit 1 on a failure."""
    from obslab.environment import blocking, check_environment, verdict

    checks = check_environment(settings_with(), broker=broker)
    _checks(checks, lambda c: f"{c.name:<24} {c.detail}")
    failed = blocking(checks)
    if not failed:
        typer.echo(verdict(checks))
    raise typer.Exit(code=1 if failed else 0)


# ------------------------------------------------------------------ settings

@app.command("settings")
def show_settings(markdown: bool = flag("print the table of docs/settings.md", "--markdown")) -> None:
    """Print the effective settings (or the documented defaults as a Markdown table)."""
    if markdown:
        typer.echo("| Name | Default | Meaning |\n|---|---|---|")
        for name, default, meaning in settings_table():
            typer.echo(f"| `{name}` | `{default}` | {meaning} |" if default else f"| `{name}` | | {meaning} |")
        return
    for name, value in settings_with().model_dump().items():
        typer.echo(f"{name.upper()}={value}")


if __name__ == "__main__":
    sys.exit(app())
