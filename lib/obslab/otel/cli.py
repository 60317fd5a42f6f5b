"""`obslab otelcol ...`: build, start, stop and inspect the lab's OpenTelemetry Collector.

obslab.cli registers `otelcol_app` and so imports this module: the two helpers it would share with
obslab.cli (an option made from a setting, an ObslabError ending a command) are repeated here,
small, rather than imported back from it.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import typer

from obslab.errors import ObslabError
from obslab.settings import Settings, load_settings

otelcol_app = typer.Typer(help="The lab's OpenTelemetry Collector (OTLP in, Kafka out), on 127.0.0.1 only.",
                          no_args_is_help=True)


def setting(name: str) -> Any:
    """An option for the setting `name`: unset means the setting's value (environment, .env, default)."""
    field = Settings.model_fields[name]
    return typer.Option(None, envvar=name.upper(), help=field.description, show_default=False)


def reported(fn):
    """An ObslabError ends the command with its message and exit code 1, never a traceback."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ObslabError as err:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None
    return run


def _settings(**overrides) -> Settings:
    """Settings with the options the user gave on top (None: not given)."""
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


@otelcol_app.command("build")
@reported
def build_cmd() -> None:
    """Build the Collector from Go modules with the pinned builder, once per manifest (cached in .cache/otelcol)."""
    from obslab.otel import collector

    settings = _settings()
    if collector.is_built(settings):
        typer.echo(f"Collector already built: {collector.binary_path(settings)}")
        return
    typer.echo(f"building the Collector with ocb {collector.BUILDER_VERSION} (a first build downloads ~660 MB "
               f"of Go modules and compiles for minutes; log: {settings.logs_dir / 'otelcol-build.log'}) ...")
    binary = collector.build(settings)
    typer.echo(f"Collector built: {binary} ({binary.stat().st_size / 1e6:.0f} MB)")


@otelcol_app.command("start")
@reported
def start_cmd(otlp_grpc_port: int = setting("otlp_grpc_port"), otlp_http_port: int = setting("otlp_http_port")) -> None:
    """Start the Collector (built by `make otelcol`) and wait until its OTLP/HTTP receiver answers."""
    from obslab.otel.collector import LocalCollector

    collector = LocalCollector(_settings(otlp_grpc_port=otlp_grpc_port, otlp_http_port=otlp_http_port))
    typer.echo(collector.start().message)


@otelcol_app.command("stop")
@reported
def stop_cmd() -> None:
    """Stop the Collector; it flushes the spans it holds first."""
    from obslab.otel.collector import LocalCollector

    typer.echo(LocalCollector(_settings()).stop())


@otelcol_app.command("status")
@reported
def status_cmd(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Running or not, and where it listens. Exit code 1 when not running."""
    from obslab.otel.collector import LocalCollector

    status = LocalCollector(_settings()).status()
    if as_json:
        typer.echo(json.dumps({"running": status.running, "pid": status.pid, "otlp_grpc": status.otlp_grpc,
                               "otlp_http": status.otlp_http, "message": status.message}))
    else:
        typer.echo(status.message)
        if status.running:
            typer.echo(f"OTLP gRPC {status.otlp_grpc}, OTLP/HTTP {status.otlp_http}/v1/traces")
    raise typer.Exit(code=0 if status.running else 1)
