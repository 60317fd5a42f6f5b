"""`obslab spark ...`: start, stop and inspect the lab's one Spark (a Spark Connect server on 127.0.0.1)."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from obslab.commands import AS_JSON, ReportingTyper, setting, settings_with

spark_app = ReportingTyper(help="The lab's Spark: one Spark Connect server on 127.0.0.1 that the stream, "
                                "notebooks and DAG tasks use instead of starting a Spark each.", no_args_is_help=True)


@spark_app.command("start")
def start_cmd(spark_connect_port: int = setting("spark_connect_port")) -> None:
    """Start the server (15-20 s) and wait until a session runs a query on it."""
    from obslab.stream.server import SparkServer

    typer.echo(SparkServer(settings_with(spark_connect_port=spark_connect_port)).start().message)


@spark_app.command("stop")
def stop_cmd() -> None:
    """Stop the server; a stream running on it stops too and resumes from its checkpoint next time."""
    from obslab.stream.server import SparkServer

    typer.echo(SparkServer(settings_with()).stop())


@spark_app.command("status")
def status_cmd(as_json: bool = AS_JSON) -> None:
    """Running or not, and its address. Exit code 1 when not running."""
    from obslab.stream.server import SparkServer

    status = SparkServer(settings_with()).status()
    if as_json:
        typer.echo(json.dumps(asdict(status)))
    else:
        typer.echo(status.message)
    raise typer.Exit(code=0 if status.running else 1)
