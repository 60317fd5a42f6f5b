"""`obslab store ...`: create or upgrade the DuckDB store and count what it holds (obslab.store)."""

from __future__ import annotations

import typer

from obslab.commands import ReportingTyper, settings_with
from obslab.lab import Lab

store_app = ReportingTyper(help="The DuckDB store.", no_args_is_help=True)


@store_app.command("migrate")
def store_migrate() -> None:
    """Create or upgrade the store's tables (idempotent)."""
    from obslab.store import Store

    settings = settings_with()
    applied = Store.from_settings(settings).migrate()
    where = settings.duckdb_path
    typer.echo(f"applied migrations {applied} to {where}" if applied else f"{where} is up to date")


@store_app.command("info")
def store_info() -> None:
    """Row counts of every table."""
    from obslab.schema import TABLES

    store = Lab(settings_with()).store
    typer.echo(f"{store.path} (schema version {store.schema_version()})")
    for name in TABLES:
        typer.echo(f"  {name:<22} {store.count(name):>10}")
