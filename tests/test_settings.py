from pathlib import Path

import pytest

from obslab.errors import ConfigError
from obslab.settings import Settings, load_settings, settings_table

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_bind_loopback_and_derive_addresses(monkeypatch):
    for name, _, _ in settings_table():
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert s.kafka_host == "127.0.0.1"  # services bind to loopback by default
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"  # built from host and port
    assert s.duckdb_path == s.data_dir / "observability.duckdb"
    assert s.topics == ["raw_events", "aggregated_metrics", "anomalies"]


@pytest.mark.parametrize(
    "env, field, expected",
    [
        ({"KAFKA_PORT": "19092"}, "kafka_port", 19092),  # ints are parsed
        ({"KAFKA_PORT": "19092"}, "kafka_bootstrap_servers", "127.0.0.1:19092"),  # derived follows
        ({"KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092"}, "kafka_bootstrap_servers", "b1:9092,b2:9092"),  # cluster
        ({"SPARK_MASTER": "spark://h:7077"}, "spark_master", "spark://h:7077"),  # a cluster is a setting
        ({"kafka_partitions": "6"}, "kafka_partitions", 6),  # names are case-insensitive
        ({"DUCKDB_PATH": "/tmp/x.duckdb"}, "duckdb_path", Path("/tmp/x.duckdb")),
        ({"DATA_DIR": "data2"}, "data_dir", ROOT / "data2"),  # relative to the project, not the cwd
        ({"DATA_DIR": ""}, "data_dir", ROOT / "data"),  # empty means default
        ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "kafka_bootstrap_servers", "127.0.0.1:9092"),
    ],
)
def test_settings_from_environment(monkeypatch, env, field, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert getattr(load_settings(), field) == expected


def test_settings_from_env_file(tmp_path, monkeypatch):
    monkeypatch.delenv("KAFKA_PARTITIONS", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("KAFKA_PARTITIONS=5\n")
    assert Settings(_env_file=env_file).kafka_partitions == 5


@pytest.mark.parametrize(
    "env, named",
    [
        ({"KAFKA_PORT": "not-a-port"}, "KAFKA_PORT"),  # wrong type names the field
        ({"KAFKA_PORT": "70000"}, "KAFKA_PORT"),  # out of range
        ({"KAFKA_PARTITIONS": "0"}, "KAFKA_PARTITIONS"),
        ({"KAFKA_PORT": "9100", "KAFKA_CONTROLLER_PORT": "9100"}, "KAFKA_CONTROLLER_PORT"),  # must differ
    ],
)
def test_invalid_settings_name_the_field(monkeypatch, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_readme_settings_table_is_current():
    from typer.testing import CliRunner

    from obslab.cli import app

    table = CliRunner().invoke(app, ["settings", "--markdown"]).stdout
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "README settings table is stale: run `make readme-settings`"


def test_every_setting_is_documented_in_readme_and_env_example():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for name, _, meaning in settings_table():
        assert f"`{name}`" in readme, f"{name} missing from the README settings table"
        assert f"{name}=" in example, f"{name} missing from .env.example"
        assert meaning, f"{name} has no description"
