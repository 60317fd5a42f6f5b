"""detect-series never prints a traceback: generated CSVs (constant, short, all-NaN, empty cells,
huge values, irregular, repeated, unsorted and daily times, mixed offsets, a header only) give an
answer (exit 0, JSON) or one line of error (exit 1); and a million points are judged."""

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from obslab.cli import app
from tests.fuzzing import examples
from obslab.detect import series
from obslab.detect.series import detect_csv, detect_period

runner = CliRunner()
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
EXAMPLES = examples(120)  # bounded: the property runs in the default `make test` in well under a minute

# Cell texts for a value: ordinary, degenerate and hostile.
VALUE_CELLS = st.one_of(
    st.floats(-1e6, 1e6).map(repr),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e150", "0", "-0.0", "abc", " 7 "]),
    st.integers(-10, 10).map(str),
)
# Steps between rows in seconds: regular, jittered, repeated (0), backwards, a day, a long gap.
STEPS = st.sampled_from([60, 60, 60, 300, 3600, 86400, 0, -60, 61, 90, 10 ** 7])
OFFSETS = st.sampled_from(["Z", "+00:00", "+01:00", "-05:30", ""])


@st.composite
def series_csvs(draw) -> str:
    """A CSV text with a `time` and a `value` column."""
    n = draw(st.sampled_from([0, 1, 2, 3, 5, 30]) | st.integers(0, 400))
    shape = draw(st.sampled_from(["noise", "constant", "cells", "rhythm", "nan"]))
    regular = draw(st.booleans())
    step = draw(st.sampled_from([60, 300, 3600, 86400]))
    offsets = draw(st.lists(OFFSETS, min_size=1, max_size=2))  # two kinds may mix naive and zoned times
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    seconds, rows = 0, []
    for i in range(n):
        seconds += step if regular else draw(STEPS)
        when = (START + timedelta(seconds=seconds)).isoformat().replace("+00:00", "")
        if shape == "constant":
            cell = "5"
        elif shape == "cells":
            cell = draw(VALUE_CELLS)
        elif shape == "rhythm":
            cell = repr(100 + 20 * np.sin(2 * np.pi * i / 24) + rng.normal(0, 1) + (50 if i == n // 2 else 0))
        elif shape == "nan":
            cell = "nan"
        else:
            cell = repr(float(rng.normal(0, 1) * 10 ** draw(st.integers(-3, 12))))
        rows.append(f"{when}{offsets[i % len(offsets)]},{cell}\n")
    return "time,value\n" + "".join(rows)


@pytest.mark.fuzz
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
@given(text=series_csvs(), period=st.sampled_from([None, None, "0", "24", "3"]))
def test_any_csv_gives_an_answer_or_one_line_of_error(tmp_path, text, period):
    path = tmp_path / "fuzz.csv"
    path.write_text(text)
    args = ["detect-series", "--csv", str(path), "--time-col", "time", "--value-col", "value", "--json"]
    out = runner.invoke(app, args + (["--period", period] if period else []))
    # An exception other than the exit typer raises is a crash (CliRunner keeps it, with its traceback).
    assert out.exception is None or isinstance(out.exception, SystemExit), (text[:500], out.exc_info)
    assert "Traceback" not in out.output
    if out.exit_code == 0:
        result = json.loads(out.stdout)
        assert len(result["alerts"]) <= len(result["episodes"]) <= result["series"]["points"]
    else:
        lines = out.stderr.strip().splitlines()
        assert out.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), out.output


@pytest.mark.slow
def test_a_million_points_are_judged(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(1)
    values = 100 + 10 * np.sin(2 * np.pi * np.arange(n) / 1440) + rng.normal(0, 1, n)
    values[700_000:700_010] += 40  # one burst, well after the start
    times = np.datetime64("2026-01-05T00:00:00") + np.arange(n) * np.timedelta64(1, "m")
    path = tmp_path / "million.csv"
    with path.open("w") as f:
        f.write("time,value\n")
        f.writelines(f"{t}Z,{v:.4f}\n" for t, v in zip(times.astype(str), values))
    result = detect_csv(path, "time", "value", z_threshold=5.0)
    assert result.summary["points"] == n and result.summary["judged"] > 0.9 * n
    burst = str(times[700_000]) + "Z"
    assert any(e.start <= burst <= e.end or e.peak == burst for e in result.episodes)


def test_a_period_refined_past_the_lags_it_was_fitted_to_is_no_crash():
    # A wandering series with a faint 34-step rhythm whose autocorrelation peaks at the edge of
    # the lags searched: the parabola's top once fell outside them (IndexError in _refined).
    rng = np.random.default_rng(5581)
    t = np.arange(533)
    values = rng.normal(0, 1, 533).cumsum() + 3 * np.sin(2 * np.pi * t / 34)
    period, strength = detect_period(values, t, 3600.0)
    assert period is None or (2 <= period <= 533 // 4 and -1 <= strength <= 1)


@pytest.mark.parametrize(
    "kind, points, score, pages",
    [
        ("shift", 1, 2.0, True),  # a level moved by 2 sd: the smallest shift that pages
        ("shift", 1, 1.9, False),  # inside the band the series shows every day
        ("spike", 1, 7.0, True),  # a lone point at 1.4 x the threshold of 5
        ("spike", 1, 6.9, False),  # a lone point just beyond the threshold: one sample of a heavy tail
        ("spike", 2, 5.1, True),  # two points out together are evidence
    ],
)
def test_an_episode_pages_only_with_evidence(kind, points, score, pages):
    assert series.pages(kind, points, score, z_threshold=5.0) is pages
