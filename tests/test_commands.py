"""The parts every `obslab` command group shares (obslab.commands)."""

import typer
from typer.testing import CliRunner

from obslab.commands import ReportingTyper, setting, settings_with
from obslab.errors import ObslabError


def test_an_obslab_error_ends_a_command_with_its_message_not_a_traceback():
    app = ReportingTyper()

    @app.command("go")
    def go() -> None:
        raise ObslabError("the broker at 127.0.0.1:9092 does not answer: `obslab broker start`")

    @app.command("other")
    def other() -> None:
        raise ValueError("a bug")

    result = CliRunner().invoke(app, ["go"])
    assert result.exit_code == 1 and "error: the broker at 127.0.0.1:9092" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert isinstance(CliRunner().invoke(app, ["other"]).exception, ValueError)  # not an ObslabError: not hidden


def test_an_option_made_from_a_setting_reads_its_variable_and_leaves_the_rest_to_the_settings(tmp_path):
    app = typer.Typer()

    @app.command()
    def show(port: int = setting("otlp_http_port")) -> None:
        typer.echo(settings_with(otlp_http_port=port, data_dir=tmp_path).otlp_http_port)

    assert CliRunner().invoke(app, [], env={"OTLP_HTTP_PORT": "4999"}).output.strip() == "4999"
    assert CliRunner().invoke(app, ["--port", "4100"]).output.strip() == "4100"
    assert CliRunner().invoke(app, [], env={"OTLP_HTTP_PORT": ""}).output.strip() == "4318"  # the setting's default
