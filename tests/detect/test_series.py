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
    # The shift is reported once, where it began; the points after it are the new normal.
    assert [(a["timestamp"], a["rule"]) for a in found] == [("2026-01-01T00:30:00Z", "shift")]
    assert found[0]["score"] > 6


def test_a_lone_spike_is_a_spike_not_a_shift(tmp_path):
    rows = ["time,value"] + [f"2026-01-01T00:{m:02d}:00Z,{300 if m == 20 else 100 + (m % 3)}" for m in range(40)]
    points = detect_csv(write(tmp_path, "\n".join(rows) + "\n"), "time", "value", 6.0)
    assert [(p.timestamp, p.rule) for p in points if p.anomalous] == [("2026-01-01T00:20:00Z", "spike")]


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


def test_the_nile_level_shift_is_found_in_a_public_dataset(tmp_path):
    # The annual Nile flow at Aswan, 1871-1970 (Cobb 1978, shipped by statsmodels): a textbook
    # change point around 1898, when the mean drops by about a quarter. The detector has never
    # seen it and is not tuned per series: it must find that one shift, and nothing else.
    import statsmodels.api as sm

    nile = sm.datasets.nile.load_pandas().data
    rows = ["year,volume"] + [f"{int(y)}-01-01T00:00:00Z,{v}" for y, v in zip(nile.year, nile.volume)]
    out = runner.invoke(app, ["detect-series", "--csv", str(write(tmp_path, "\n".join(rows) + "\n")),
                              "--time-col", "year", "--value-col", "volume", "--json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.stdout)["anomalies"]
    assert [a["rule"] for a in found] == ["shift"]
    assert 1896 <= int(found[0]["timestamp"][:4]) <= 1900
