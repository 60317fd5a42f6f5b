"""`obslab broker ...` through the lab's CLI, in a temporary DATA_DIR with no broker running."""

import json

from typer.testing import CliRunner

from obslab.cli import app


def test_status_of_no_broker_says_so_and_exits_1(tmp_path):
    env = {"DATA_DIR": str(tmp_path)}
    plain = CliRunner().invoke(app, ["broker", "status"], env=env)
    assert plain.exit_code == 1 and plain.output.strip() == "broker is not running"
    as_json = CliRunner().invoke(app, ["broker", "status", "--json"], env=env)
    assert as_json.exit_code == 1
    status = json.loads(as_json.output)
    assert (status["running"], status["pid"], status["topics"]) == (False, None, {})
    assert status["message"] == "broker is not running"
