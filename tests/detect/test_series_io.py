"""Reading a series from a CSV file (obslab.detect.series_io): validation naming the row or column, and
the time stamp policy (sorting, combining, offsets, a repeated daylight-saving hour)."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from obslab.detect.series_io import SeriesError, read_series_csv
from tests.detect.helpers import cli, cli_json, write, write_series


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("time,value\n", "no data rows"),
        ("when,value\n2026-01-01T00:00:00Z,1\n", "no column 'time'"),
        ("time,value\n2026-01-01T00:00:00Z,1\nnot-a-time,2\n", "row 2: time='not-a-time' is not an ISO-8601 time"),
        ("time,value\n2026-01-01T00:00:00Z,abc\n", "row 1: value='abc' is not a number"),
        ("time,value\n2026-01-01T00:00:00Z,inf\n", "row 1: value='inf' is not a finite number"),
        ("time,value\n2026-01-01T00:00:00Z,1e200\n", "row 1: value='1e200' is not a finite number of at most"),
        # Empty and NaN cells are missing values; a column of nothing but those is no series.
        ("time,value\n2026-01-01T00:00:00Z,nan\n2026-01-01T01:00:00Z,\n", "column 'value' has no value in any"),
        # Naive and zoned times together have no single meaning, whatever the policy.
        ("time,value\n2026-01-01T00:00:00Z,1\n2026-01-01T01:00:00,2\n", "row 2: .* has no UTC offset, unlike row 1"),
        ("time,value\n2026-01-01T00:00:00,1\n2026-01-01T01:00:00+01:00,2\n", "row 2: .* has a UTC offset, unlike row 1"),
    ],
)
def test_bad_csvs_are_rejected_naming_the_row_or_column(tmp_path, text, message):
    with pytest.raises(SeriesError, match=message):
        read_series_csv(write(tmp_path, text), "time", "value")
    code, out = cli("--csv", tmp_path / "s.csv", "--time-col", "time", "--value-col", "value")
    assert code == 1 and "error:" in out.output


@pytest.mark.parametrize(
    "text, message",
    [
        ("time,value\n2026-01-01T00:01:00Z,1\n2026-01-01T00:00:00Z,2\n", "row 2: .* is earlier than the row before"),
        ("time,value\n2026-01-01T00:00:00Z,1\n2026-01-01T00:00:00Z,2\n", "row 2: duplicate timestamp"),
        # The same instant written in two offsets is a repeat too.
        ("time,value\n2026-01-01T01:00:00+01:00,1\n2026-01-01T00:00:00Z,2\n", "row 2: duplicate timestamp"),
    ],
)
def test_strict_refuses_what_the_default_sorts_and_combines(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SeriesError, match=message):
        read_series_csv(path, "time", "value", "strict")
    series = read_series_csv(path, "time", "value")
    assert len(series.values) == len(set(series.times)) and series.times == sorted(series.times)


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("mean", 2.0),  # the default: a repeated hour of a gauge is the same quantity measured twice
        ("sum", 4.0),  # counts that a clock change split over two rows
        ("first", 1.0),
        ("last", 3.0),
    ],
)
def test_rows_of_one_instant_are_combined_as_asked(tmp_path, policy, expected):
    path = write(tmp_path, "time,value\n2026-01-01T00:00:00Z,1\n2026-01-01T00:00:00Z,3\n2026-01-01T01:00:00Z,5\n")
    series = read_series_csv(path, "time", "value", policy)
    assert series.values == [expected, 5.0] and series.combined == 1 and series.rows == 3


def test_an_unknown_policy_is_an_error(tmp_path):
    path = write(tmp_path, "time,value\n2026-01-01T00:00:00Z,1\n")
    code, out = cli("--csv", path, "--time-col", "time", "--value-col", "value", "--timestamps", "median")
    assert code == 1 and "mean, sum, first, last, strict" in out.output


def test_times_with_different_offsets_compare_as_instants(tmp_path):
    # Berlin's clocks went back at 03:00 CEST on 2026-10-25: 02:30+02:00 (00:30Z) and 02:30+01:00
    # (01:30Z) are an hour apart, and 02:00+01:00 is the instant 01:00Z.
    text = ("time,value\n2026-10-25T02:30:00+02:00,1\n2026-10-25T02:30:00+01:00,2\n"
            "2026-10-25T01:00:00Z,3\n2026-10-25T02:00:00+01:00,5\n")
    series = read_series_csv(write(tmp_path, text), "time", "value")
    assert series.values == [1.0, 4.0, 2.0]  # 00:30Z; 01:00Z (rows 3 and 4, their mean); 01:30Z
    assert series.combined == 1 and series.reordered == 2


def local_hourly_file(tmp_path, days=21, swaps=()):
    """Hourly readings written in Berlin local time without an offset, as many loggers do,
    across the autumn clock change: the hour 02:00-03:00 of 2026-10-25 is written twice. The
    value follows the local hour (a daily rhythm of a service used by people)."""
    zone = ZoneInfo("Europe/Berlin")
    first = datetime(2026, 10, 11, tzinfo=timezone.utc)
    times, values = [], []
    for h in range(days * 24):
        local = (first + timedelta(hours=h)).astimezone(zone)
        times.append(local.replace(tzinfo=None).isoformat())
        values.append(round(100 + 20 * np.sin(2 * np.pi * local.hour / 24), 6))
    for i in swaps:  # rows i and i + 1 (0-based) change places
        times[i], times[i + 1] = times[i + 1], times[i]
        values[i], values[i + 1] = values[i + 1], values[i]
    return write_series(tmp_path, times, values), times


def test_a_repeated_dst_hour_and_swapped_rows_are_accepted_by_default(tmp_path):
    path, times = local_hourly_file(tmp_path, swaps=(100, 250, 400))
    result = cli_json(path)
    info = result["series"]
    # One row repeats the 02:00 hour; of each swapped pair, one row comes after a later one.
    assert (info["rows"], info["points"], info["combined"], info["reordered"]) == (len(times), len(times) - 1, 1, 3)
    # Combined by mean, the repeat is one point of the local-time grid: the daily rhythm is kept
    # through the clock change and the noise-free series raises nothing.
    assert info["period"] == 24 and info["gaps"] == 0
    assert result["episodes"] == [] and result["anomalies"] == []


def test_strict_refuses_the_same_file_naming_the_row(tmp_path):
    path, _ = local_hourly_file(tmp_path, swaps=(100, 250, 400))
    code, out = cli("--csv", path, "--time-col", "time", "--value-col", "value", "--timestamps", "strict")
    # Row numbers count data rows from 1: the swapped pair is rows 101 and 102.
    assert code == 1 and "row 102:" in out.output and "earlier than the row before" in out.output
    path, times = local_hourly_file(tmp_path)
    repeat = next(i for i in range(1, len(times)) if times[i] == times[i - 1]) + 1
    code, out = cli("--csv", path, "--time-col", "time", "--value-col", "value", "--timestamps", "strict")
    assert code == 1 and f"row {repeat}: duplicate timestamp" in out.output


def test_a_real_hourly_series_with_gaps_runs_to_the_end():
    # Regression input: ad-click prices, hourly, with 4 gaps (numenta/NAB, data/realAdExchange/
    # exchange-4_cpc_results.csv, MIT; see tests/detect/data/README.md). Before the period search kept
    # its refined lag among the lags it measured, this file ended in an IndexError from _refined.
    path = Path(__file__).parent / "data" / "nab_exchange-4_cpc_results.csv"
    code, out = cli("--csv", path, "--time-col", "timestamp", "--value-col", "value", "--json")
    assert code == 0 and out.exception is None, out.output
    series = json.loads(out.stdout)["series"]
    assert (series["rows"], series["gaps"]) == (1643, 4)  # every row read (1,644 lines less the header)
    assert series["period"] == 24 and series["step_seconds"] == 3600  # prices follow the day, hour by hour
