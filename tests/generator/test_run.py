"""A run from the command line: `obslab generate --start` (and GENERATE_START) makes a run repeatable
byte for byte; a start without a timezone is refused."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from obslab.cli import app
from obslab.errors import ConfigError
from obslab.generator.run import RunPlan, parse_start

START = "2026-01-05T09:00:07.250+01:00"


def _generate(tmp_path, name: str, *options: str, env: dict | None = None):
    events = tmp_path / f"{name}.jsonl"
    result = CliRunner().invoke(app, ["generate", "--scenario", "cascade", "--seed", "3", "--rate", "20",
                                      "--backfill-minutes", "0", "--duration", "420", "--to-file", str(events),
                                      "--no-store", "--json", *options],
                                env={"DATA_DIR": str(tmp_path), "GENERATE_START": None, **(env or {})})
    return result, events


def test_the_same_seed_scenario_and_start_give_byte_identical_files(tmp_path):
    first, a = _generate(tmp_path, "a", "--start", START)
    second, b = _generate(tmp_path, "b", "--start", START)
    assert first.exit_code == second.exit_code == 0, first.output
    assert a.read_bytes() == b.read_bytes() and len(a.read_bytes()) > 0
    truth_a, truth_b = (p.with_name(p.stem + ".faults.jsonl").read_text() for p in (a, b))
    assert truth_a == truth_b and "f000>checkout" in truth_a  # ground truth too, cascade effects included
    assert json.loads(a.read_text().splitlines()[0])["event_time"] >= "2026-01-05T08:00:07.250Z"  # +01:00 read as such
    report = json.loads(first.stdout)["run"]
    assert report["started_at"] == "2026-01-05T08:00:07.250000+00:00"
    # The setting does the same as the option; another start gives other events.
    from_env, c = _generate(tmp_path, "c", env={"GENERATE_START": START})
    assert from_env.exit_code == 0 and c.read_bytes() == a.read_bytes()
    _, d = _generate(tmp_path, "d", "--start", "2026-01-05T08:00:08.250Z")
    assert d.read_bytes() != a.read_bytes()


@pytest.mark.parametrize("text, why", [
    ("2026-01-05T09:00:00", "has no timezone; add one, e.g. 2026-01-05T09:00:00Z"),
    ("next monday", "is not an ISO-8601 time"),
])
def test_a_start_without_timezone_or_not_iso_is_a_clear_error(tmp_path, text, why):
    result, events = _generate(tmp_path, "x", "--start", text)
    assert result.exit_code == 1 and why in result.output and "--start" in result.output
    assert not events.exists()  # nothing generated
    with pytest.raises(ConfigError, match="GENERATE_START"):
        parse_start(text)


@pytest.mark.parametrize("text, expected", [
    ("2026-01-05T09:00:00Z", datetime(2026, 1, 5, 9, tzinfo=timezone.utc)),
    ("2026-01-05T10:00:00+01:00", datetime(2026, 1, 5, 9, tzinfo=timezone.utc)),  # to UTC
    ("  ", None),  # blank: no fixed start (now)
    (None, None),
])
def test_parse_start(text, expected):
    assert parse_start(text) == expected


def test_a_plan_ending_now_starts_at_a_given_start_instead():
    fixed = RunPlan.ending_now(300, start="2026-01-05T09:00:00Z")
    assert fixed.start == datetime(2026, 1, 5, 9, tzinfo=timezone.utc) and fixed.duration_s == 300
    moving = RunPlan.ending_now(300)
    assert datetime.now(timezone.utc) - timedelta(seconds=302) < moving.start < datetime.now(timezone.utc)
