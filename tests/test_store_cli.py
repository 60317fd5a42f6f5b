"""`obslab store ...` through the lab's CLI, on a store in a temporary DATA_DIR."""

from typer.testing import CliRunner

from obslab.cli import app
from obslab.schema import TABLES


def test_migrate_creates_the_store_once_and_info_counts_every_table(tmp_path):
    path = tmp_path / "observability.duckdb"
    env = {"DATA_DIR": str(tmp_path), "DUCKDB_PATH": str(path)}
    first = CliRunner().invoke(app, ["store", "migrate"], env=env)
    assert first.exit_code == 0 and first.output.startswith("applied migrations [") and path.exists()
    again = CliRunner().invoke(app, ["store", "migrate"], env=env)
    assert again.exit_code == 0 and again.output.strip() == f"{path} is up to date"  # idempotent
    info = CliRunner().invoke(app, ["store", "info"], env=env)
    assert info.exit_code == 0, info.output
    lines = info.output.splitlines()
    assert lines[0].startswith(f"{path} (schema version ")
    assert [line.split() for line in lines[1:]] == [[name, "0"] for name in TABLES]  # a new store: all empty
