"""`obslab otelcol ...` (obslab.otel.cli), run through the obslab command as a user runs it."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from conftest import free_port
from obslab.cli import app

runner = CliRunner()


def _lab_env(tmp_path) -> dict[str, str]:
    """A lab of its own in tmp_path, on free OTLP ports, with no Collector built in its cache."""
    grpc, http = free_port(), free_port()
    while http == grpc:
        http = free_port()
    return {"DATA_DIR": str(tmp_path), "CACHE_DIR": str(tmp_path / "cache"),
            "OTLP_GRPC_PORT": str(grpc), "OTLP_HTTP_PORT": str(http)}


def test_the_collector_has_the_broker_s_commands():
    result = runner.invoke(app, ["otelcol", "--help"])
    assert result.exit_code == 0
    for command in ("build", "start", "stop", "status"):
        assert command in result.output


@pytest.mark.parametrize("args, says", [
    (["otelcol", "status"], "Collector is not running"),
    (["otelcol", "status", "--json"], '"running": false'),
])
def test_status_of_a_stopped_lab_says_not_running_and_exits_1(tmp_path, args, says):
    result = runner.invoke(app, args, env=_lab_env(tmp_path))
    assert result.exit_code == 1  # as `obslab broker status`: scripts can test it
    assert says in result.output


def test_status_json_names_where_the_collector_listens(tmp_path):
    env = _lab_env(tmp_path)
    result = runner.invoke(app, ["otelcol", "status", "--json"], env=env)
    status = json.loads(result.output)
    assert status == {"running": False, "pid": None, "otlp_grpc": f"127.0.0.1:{env['OTLP_GRPC_PORT']}",
                      "otlp_http": f"http://127.0.0.1:{env['OTLP_HTTP_PORT']}", "message": "Collector is not running"}


def test_stop_of_a_stopped_lab_is_no_error(tmp_path):
    result = runner.invoke(app, ["otelcol", "stop"], env=_lab_env(tmp_path))
    assert result.exit_code == 0 and "Collector is not running" in result.output


def test_start_on_a_taken_port_is_one_line_of_error_without_a_traceback(tmp_path):
    env = _lab_env(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        result = runner.invoke(app, ["otelcol", "start", "--otlp-http-port", str(taken)], env=env)
    assert result.exit_code == 1
    assert f"error: port {taken} on 127.0.0.1 is already in use" in result.output
    assert "OTLP_HTTP_PORT=<port>" in result.output and "Traceback" not in result.output


def test_start_before_a_build_says_to_run_make_otelcol(tmp_path):
    result = runner.invoke(app, ["otelcol", "start"], env=_lab_env(tmp_path))
    assert result.exit_code == 1 and "Run `make otelcol`" in result.output
