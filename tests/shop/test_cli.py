"""`obslab shop ...` through the lab's CLI: status, fault switching and its errors, in a temporary DATA_DIR."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from obslab.cli import app
from obslab.shop.cli import KIND_HELP, SERVICE_HELP
from obslab.shop.faults import KINDS
from obslab.shop.topology import SERVICES
from obslab.store import Store


@pytest.fixture()
def run(tmp_path):
    env = {"DATA_DIR": str(tmp_path), "DUCKDB_PATH": str(tmp_path / "observability.duckdb")}

    def invoke(*args: str):
        return CliRunner().invoke(app, ["shop", *args], env=env)

    invoke.store = Store(tmp_path / "observability.duckdb")
    return invoke


def test_status_of_a_stopped_shop_exits_1(run):
    result = run("status", "--json")
    assert result.exit_code == 1
    assert '"running": false' in result.stdout


def test_a_fault_is_switched_and_cleared_with_its_ground_truth(run):
    switched = run("fault", "payment", "error_surge", "--size", "0.4", "--seconds", "30")
    assert switched.exit_code == 0, switched.output
    assert "001-error_surge-payment: error_surge x0.4 on payment" in switched.stdout
    assert run.store.query("SELECT fault_type, service, magnitude FROM injected_incidents") == [
        ("error_surge", "payment", 0.4)]
    cleared = run("fault", "payment", "clear")
    assert cleared.exit_code == 0 and "ended 001-error_surge-payment" in cleared.stdout
    assert "no fault runs on payment" in run("fault", "payment", "clear").stdout


def test_a_fault_the_shop_cannot_play_ends_with_the_message_not_a_traceback(run):
    result = run("fault", "payment", "meltdown")
    assert result.exit_code == 1
    assert "cannot play a fault 'meltdown'" in result.output and "Traceback" not in result.output


def test_the_help_names_every_service_and_fault_kind():
    assert all(s in SERVICE_HELP for s in SERVICES)
    assert all(k in KIND_HELP for k in KINDS)
