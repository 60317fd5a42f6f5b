import json

import pytest
from typer.testing import CliRunner

from obslab.cli import app
from obslab.detect.series import SeriesError, detect_csv

runner = CliRunner()


def write(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def level_shift_csv(tmp_path):
    rows = ["time,value"] + [f"2026-01-01T00:{m:02d}:00Z,{100 + (m % 3)}" for m in range(30)]
    rows += [f"2026-01-01T00:{m:02d}:00Z,{160 + (m % 3)}" for m in range(30, 40)]
    return write(tmp_path, "\n".join(rows) + "\n")


def test_level_shift_is_found_and_json_is_in_input_order(tmp_path):
    out = runner.invoke(app, ["detect-series", "--csv", str(level_shift_csv(tmp_path)), "--time-col", "time",
                              "--value-col", "value", "--json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.stdout)["anomalies"]
    assert [a["timestamp"] for a in found] == [f"2026-01-01T00:{m:02d}:00Z" for m in range(30, 40)]
    assert all(a["score"] > 6 for a in found)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("time,value\n", "no data rows"),
        ("when,value\n2026-01-01T00:00:00Z,1\n", "no column 'time'"),
        ("time,value\n2026-01-01T00:00:00Z,1\nnot-a-time,2\n", "row 2: time='not-a-time' is not an ISO-8601 time"),
        ("time,value\n2026-01-01T00:00:00Z,abc\n", "row 1: value='abc' is not a number"),
        ("time,value\n2026-01-01T00:00:00Z,nan\n", "row 1: value='nan' is not a finite number"),
        ("time,value\n2026-01-01T00:01:00Z,1\n2026-01-01T00:00:00Z,2\n", "row 2: .* is earlier than the row before"),
        ("time,value\n2026-01-01T00:00:00Z,1\n2026-01-01T00:00:00Z,2\n", "row 2: duplicate timestamp"),
    ],
)
def test_bad_csvs_are_rejected_naming_the_row_or_column(tmp_path, text, message):
    with pytest.raises(SeriesError, match=message):
        detect_csv(write(tmp_path, text), "time", "value", 6.0)
    out = runner.invoke(app, ["detect-series", "--csv", str(tmp_path / "s.csv"), "--time-col", "time",
                              "--value-col", "value"])
    assert out.exit_code == 1 and "error:" in out.output
