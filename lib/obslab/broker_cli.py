"""`obslab broker ...`: start, stop and look at the local Kafka broker (obslab.broker)."""

from __future__ import annotations

import json

import typer

from obslab.commands import AS_JSON, ReportingTyper, setting, settings_with

broker_app = ReportingTyper(help="The local Kafka broker (KRaft, single node).", no_args_is_help=True)


@broker_app.command("start")
def broker_start(kafka_port: int = setting("kafka_port"), kafka_controller_port: int = setting("kafka_controller_port"),
                 kafka_partitions: int = setting("kafka_partitions")) -> None:
    """Start the broker (formats storage on first use) and create the lab topics."""
    from obslab.broker import LocalBroker

    broker = LocalBroker(settings_with(kafka_port=kafka_port, kafka_controller_port=kafka_controller_port,
                                   kafka_partitions=kafka_partitions))
    typer.echo(broker.start().message)


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the broker cleanly; no JVM is left behind."""
    from obslab.broker import LocalBroker

    typer.echo(LocalBroker(settings_with()).stop())


@broker_app.command("status")
def broker_status(as_json: bool = AS_JSON) -> None:
    """Running or not; topics and their end offsets. Exit code 1 when not running."""
    from obslab.broker import LocalBroker

    status = LocalBroker(settings_with()).status()
    if as_json:
        typer.echo(json.dumps({"running": status.running, "pid": status.pid,
                               "bootstrap_servers": status.bootstrap_servers,
                               "topics": status.topics, "message": status.message}))
    else:
        typer.echo(status.message)
        if status.running:
            typer.echo(f"bootstrap servers: {status.bootstrap_servers}")
            for topic, parts in status.topics.items():
                total = sum(parts.values())
                per = ", ".join(f"p{p}={o}" for p, o in parts.items())
                typer.echo(f"  {topic:<20} {total:>10} messages  ({per})")
    raise typer.Exit(code=0 if status.running else 1)
