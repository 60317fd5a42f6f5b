"""`obslab otelcol ...`: build, start, stop and inspect the lab's OpenTelemetry Collector."""

from __future__ import annotations

import json

import typer

from obslab.commands import AS_JSON, ReportingTyper, setting, settings_with

otelcol_app = ReportingTyper(help="The lab's OpenTelemetry Collector (OTLP in, Kafka out), on 127.0.0.1 only.",
                             no_args_is_help=True)


@otelcol_app.command("build")
def build_cmd() -> None:
    """Build the Collector from Go modules with the pinned builder, once per manifest (cached in .cache/otelcol)."""
    from obslab.otel import collector

    settings = settings_with()
    if collector.is_built(settings):
        typer.echo(f"Collector already built: {collector.binary_path(settings)}")
        return
    typer.echo(f"building the Collector with ocb {collector.BUILDER_VERSION} (a first build downloads ~660 MB "
               f"of Go modules and compiles for minutes; log: {settings.logs_dir / 'otelcol-build.log'}) ...")
    binary = collector.build(settings)
    typer.echo(f"Collector built: {binary} ({binary.stat().st_size / 1e6:.0f} MB)")


@otelcol_app.command("start")
def start_cmd(otlp_grpc_port: int = setting("otlp_grpc_port"), otlp_http_port: int = setting("otlp_http_port")) -> None:
    """Start the Collector (built by `make otelcol`) and wait until its OTLP/HTTP receiver answers."""
    from obslab.otel.collector import LocalCollector

    collector = LocalCollector(settings_with(otlp_grpc_port=otlp_grpc_port, otlp_http_port=otlp_http_port))
    typer.echo(collector.start().message)


@otelcol_app.command("stop")
def stop_cmd() -> None:
    """Stop the Collector; it flushes the spans it holds first."""
    from obslab.otel.collector import LocalCollector

    typer.echo(LocalCollector(settings_with()).stop())


@otelcol_app.command("status")
def status_cmd(as_json: bool = AS_JSON) -> None:
    """Running or not, and where it listens. Exit code 1 when not running."""
    from obslab.otel.collector import LocalCollector

    status = LocalCollector(settings_with()).status()
    if as_json:
        typer.echo(json.dumps({"running": status.running, "pid": status.pid, "otlp_grpc": status.otlp_grpc,
                               "otlp_http": status.otlp_http, "message": status.message}))
    else:
        typer.echo(status.message)
        if status.running:
            typer.echo(f"OTLP gRPC {status.otlp_grpc}, OTLP/HTTP {status.otlp_http}/v1/traces")
    raise typer.Exit(code=0 if status.running else 1)
