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
    assert s.topics == ["raw_events", "aggregated_metrics", "anomalies", "otlp_spans"]
    assert s.otel_host == "127.0.0.1"  # the Collector too


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


def test_docs_settings_table_is_current():
    from typer.testing import CliRunner

    from obslab.cli import app

    table = CliRunner().invoke(app, ["settings", "--markdown"]).stdout
    page = (ROOT / "docs" / "settings.md").read_text()
    assert table in page, "docs/settings.md's settings table is stale: run `make readme-settings`"


def test_every_setting_is_documented_in_docs_and_env_example():
    page = (ROOT / "docs" / "settings.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for name, _, meaning in settings_table():
        assert f"`{name}`" in page, f"{name} missing from the settings table in docs/settings.md"
        assert f"{name}=" in example, f"{name} missing from .env.example"
        assert meaning, f"{name} has no description"


@pytest.mark.parametrize(
    "env, said",
    [
        # no error budget: burn rate = error rate / (1 - SLO) would divide by zero
        ({"SLO_AVAILABILITY": '{"checkout": 1.0}'}, "strictly between 0 and 1"),
        ({"SLO_AVAILABILITY": '{"checkout": 0}'}, "strictly between 0 and 1"),  # every request may fail: no SLO
        ({"SLO_AVAILABILITY": '{"checkout": 99.9}'}, "strictly between 0 and 1"),  # a percentage, not a fraction
        ({"SLO_AVAILABILITY": '{"": 0.99}'}, "needs a name"),  # a service without a name
        ({"LATENCY_SLA_MS": '{"search": 0}'}, "above 0 ms"),  # every request would breach it
        ({"LATENCY_SLA_MS": '{"search": -150}'}, "above 0 ms"),
        ({"SLO_AVAILABILITY": "0.99"}, "valid dictionary"),  # one number for all services is not the format
        ({"SLO_AVAILABILITY": "{checkout: 0.99}"}, "not valid JSON"),  # unquoted key: fails while reading the env
        ({"LATENCY_SLA_MS": '{"search": "fast"}'}, "LATENCY_SLA_MS.search"),  # the service keeps its case
        ({"ERROR_SURGE_FACTOR": "0.5"}, "ERROR_SURGE_FACTOR"),  # a surge factor below 1 fires on normal traffic
        ({"BURN_THRESHOLD": "0"}, "BURN_THRESHOLD"),
    ],
)
def test_bad_detection_settings_are_a_clear_config_error(monkeypatch, env, said):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert said in message and next(iter(env)) in message and "Fix the environment variable" in message


def test_a_bad_setting_ends_any_command_with_a_message_not_a_traceback(monkeypatch):
    from typer.testing import CliRunner

    from obslab.cli import app

    # `status` and `demo` read settings outside any error handling before; a JSON typo raised from pydantic.
    for command in (["status"], ["demo-stop"], ["settings"]):
        result = CliRunner().invoke(app, command, env={"SLO_AVAILABILITY": "{checkout: 0.99}"})
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (command, result.exception)
        assert "error: invalid settings (SLO_AVAILABILITY: not valid JSON" in result.stderr, command


def test_the_settings_table_shows_the_real_defaults(monkeypatch):
    for name, _, _ in settings_table():
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)
    table = {name: default for name, default, _ in settings_table()}
    assert not [name for name, default in table.items() if "PydanticUndefined" in default]
    for name in ("LATENCY_SLA_MS", "SLO_AVAILABILITY"):  # the two JSON settings: what a user writes in .env
        import json

        assert json.loads(table[name]) == getattr(defaults, name.lower()), name
