"""detect-series: the time stamp policy, rhythm, baseline and episodes, on made-up series with
known anomalies and on public series that installed packages ship (no download at test time)."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from typer.testing import CliRunner

from obslab.cli import app
from obslab.detect.series import Series, SeriesError, detect, detect_period, read_series_csv

runner = CliRunner()
Z = 5.0  # given explicitly: a change of SHIFT_Z's default must not move these tests
START = datetime(2026, 1, 5, tzinfo=timezone.utc)


def write(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def write_series(tmp_path, times, values, name="s.csv"):
    return write(tmp_path, "time,value\n" + "".join(f"{t},{float(v)!r}\n" for t, v in zip(times, values)), name)


def regular(values, step=timedelta(hours=1)) -> Series:
    """A series at a regular step from START, as read_series_csv would return it."""
    times = [START + i * step for i in range(len(values))]
    return Series([t.isoformat() for t in times], times, [float(v) for v in values], len(times), 0, 0)


def cli(*args):
    out = runner.invoke(app, ["detect-series", *map(str, args)])
    return out.exit_code, out


def cli_json(path, *args):
    code, out = cli("--csv", path, "--time-col", "time", "--value-col", "value", "--z", Z, "--json", *args)
    assert code == 0, out.output
    return json.loads(out.stdout)


def daily_sine(n, period=24):
    return 100 + 20 * np.sin(2 * np.pi * np.arange(n) / period)


# -- reading: time stamps ----------------------------------------------------------------------

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


def test_missing_steps_are_gaps_that_keep_the_phase():
    # A noise-free daily rhythm with 5 % of its hours lost: counted by rows, the phase would slip
    # at every gap and the rhythm would look broken.
    rng = np.random.default_rng(1)
    values = daily_sine(24 * 40)
    keep = np.sort(rng.choice(len(values), size=int(len(values) * 0.95), replace=False))
    full = regular(values)
    series = Series([full.texts[i] for i in keep], [full.times[i] for i in keep], [full.values[i] for i in keep],
                    len(keep), 0, 0)
    result = detect(series, Z)
    assert result.summary["gaps"] == len(values) - len(keep) - (len(values) - 1 - keep[-1]) - keep[0]
    assert result.summary["period"] == 24 and result.episodes == []


# -- rhythm ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "step, period, shape",
    [
        (timedelta(hours=1), 24, "sine"),  # the case: 4,000 hourly points of a daily sine
        (timedelta(minutes=5), 288, "sine"),  # a day of 5-minute points: under 14 cycles in 4,000
        (timedelta(hours=1), 24, "office"),  # a flat night and a busy day: not a sine at all
        (timedelta(days=1), 7, "sine"),  # a weekly rhythm of daily points
    ],
)
def test_a_noise_free_rhythm_is_found_to_the_step_and_raises_nothing(step, period, shape):
    phase = np.arange(4000) % period
    values = daily_sine(4000, period) if shape == "sine" else np.where((phase >= 8) & (phase < 18), 250.0, 40.0)
    result = detect(regular(values, step), Z)
    assert result.summary["period"] == period and result.summary["period_source"] == "detected"
    assert result.episodes == [] and not any(p.anomalous for p in result.points)


def ar1(rng, n, phi):
    out = np.zeros(n)
    shocks = rng.normal(size=n)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + shocks[t]
    return out


@pytest.mark.parametrize("n", [300, 3000])
@pytest.mark.parametrize("kind", ["white", "random walk", "ar 0.9", "heavy tails", "trend and shift"])
def test_no_rhythm_is_found_where_there_is_none(kind, n):
    # The significance rule lets a rhythmless series pass for periodic with chance 0.1 %; over
    # these 10 kinds x lengths x 3 seeds, any false period would be a rule that does not hold.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = {
            "white": lambda: rng.normal(size=n),
            "random walk": lambda: np.cumsum(rng.normal(size=n)),
            "ar 0.9": lambda: ar1(rng, n, 0.9),
            "heavy tails": lambda: rng.standard_t(2, size=n),
            "trend and shift": lambda: 0.01 * np.arange(n) + 5 * (np.arange(n) >= n // 2) + rng.normal(size=n),
        }[kind]()
        assert detect_period(values, np.arange(n))[0] is None, (kind, n, seed)


def test_a_slow_rhythm_under_fast_noise_is_found():
    # 5-minute points of a daily cycle only twice the noise's standard deviation: step to step,
    # noise is 40 times the rhythm's change, so the differences alone do not show it.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = 50 + 2 * np.sin(2 * np.pi * np.arange(288 * 14) / 288) + rng.normal(size=288 * 14)
        period, _ = detect_period(values, np.arange(len(values)), 300.0)
        assert period is not None and abs(period - 288) <= 2  # within 10 minutes of a day


@pytest.mark.parametrize("weekend_factor, period", [(0.7, 168), (1.0, 24)])
def test_a_weekly_rhythm_wins_over_the_daily_one_only_when_weekends_differ(weekend_factor, period):
    rng = np.random.default_rng(0)
    hours = np.arange(24 * 7 * 10)
    weekend = (hours // 24) % 7 >= 5
    values = daily_sine(len(hours), 24) * np.where(weekend, weekend_factor, 1.0) + rng.normal(0, 3, len(hours))
    result = detect(regular(values), Z)
    assert result.summary["period"] == period
    assert result.episodes == []  # with the right period, weekends are no surprise


def test_a_given_period_is_used_and_a_too_long_one_is_refused(tmp_path):
    values = daily_sine(24 * 10)
    times = [(START + timedelta(hours=i)).isoformat() for i in range(len(values))]
    path = write_series(tmp_path, times, values)
    assert cli_json(path, "--period", 24)["series"]["period_source"] == "given"
    assert cli_json(path, "--period", 0)["series"]["period"] is None
    code, out = cli("--csv", path, "--time-col", "time", "--value-col", "value", "--period", 100)
    assert code == 1 and "--period 100 needs at least 400 steps" in out.output


# -- detection ---------------------------------------------------------------------------------

def test_injected_spike_shift_and_dip_are_found_as_three_episodes():
    # A noisy daily rhythm (amplitude 20, noise 2) with a 15-sd spike at hour 720, a 6-sd level
    # shift from hour 1080 and a 10-hour dip of 8 sd from hour 1300. Nothing else may page: at
    # z = 5 a normal point is out with chance 6e-7, about 0.01 false spikes over these 10 series.
    for seed in range(10):
        rng = np.random.default_rng(seed)
        values = daily_sine(24 * 60) + rng.normal(0, 2, 24 * 60)
        values[720] += 30
        values[1080:] += 12
        values[1300:1310] -= 16
        series = regular(values)
        found = [(e.kind, e.direction, series.texts.index(e.start), series.texts.index(e.end))
                 for e in detect(series, Z).episodes]
        assert len(found) == 3, (seed, found)
        assert found[0] == ("spike", "up", 720, 720), seed
        kind, direction, start, end = found[1]
        assert (kind, direction, start == end) == ("shift", "up", True) and abs(start - 1080) <= 1, seed
        kind, direction, start, end = found[2]
        # Its end may run on over a few points of noise that lean the same way (one in six does).
        assert (kind, direction, start) == ("spike", "down", 1300) and 1309 <= end <= 1313, seed


def test_a_shift_is_reported_once_where_it_began_and_the_new_level_is_normal(tmp_path):
    rng = np.random.default_rng(3)
    values = 100 + rng.normal(0, 1, 300)
    values[150:] += 8
    times = [(START + timedelta(minutes=i)).isoformat() for i in range(300)]
    result = cli_json(write_series(tmp_path, times, values))
    assert [(e["kind"], e["start"], e["direction"]) for e in result["episodes"]] == [("shift", times[150], "up")]
    assert [(a["timestamp"], a["rule"]) for a in result["anomalies"]] == [(times[150], "shift")]
    assert 6 < result["episodes"][0]["score"] < 10  # the move, in robust standard deviations


def test_white_noise_raises_nothing():
    # The spike rule alone would raise 2 x 2.9e-7 x 15,000 = 0.009 false alarms here.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        assert detect(regular(10 + rng.normal(size=5000)), Z).episodes == [], seed


@pytest.mark.parametrize("kind", ["random walk", "ar 0.95"])
def test_a_wandering_series_is_not_a_string_of_alerts(kind):
    # Its level moves all the time; judged as independent points it raised ~200 shifts in 4,000.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        noise = np.cumsum(rng.normal(size=4000)) if kind == "random walk" else ar1(rng, 4000, 0.95)
        assert len(detect(regular(1000 + noise), Z).episodes) <= 2, seed


@pytest.mark.parametrize("mean", [pytest.param(0.05, marks=pytest.mark.slow), 0.3])  # 0.05: the same property, rarer
def test_rare_counts_are_judged_as_counts(mean):
    # Errors per 5 minutes, mostly none: 3 where 0.3 are usual happen one step in 300, though
    # that is many robust standard deviations (all but 0) out; judged as measurements alone,
    # such a series raised 20 to 170 episodes in 4,000 steps. A burst of 12 is no accident.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        counts = rng.poisson(mean, 4000).astype(float)
        assert detect(regular(counts, timedelta(minutes=5)), Z).episodes == [], seed
        counts[3000] += 12
        series = regular(counts, timedelta(minutes=5))
        assert [e.peak for e in detect(series, Z).episodes] == [series.texts[3000]], seed


def test_a_series_too_short_to_judge_is_reported_not_refused(tmp_path):
    times = [(START + timedelta(hours=i)).isoformat() for i in range(10)]
    result = cli_json(write_series(tmp_path, times, range(10)))
    assert result["series"]["judged"] == 0 and result["series"]["judged_from"] is None
    assert result["episodes"] == []


def test_the_json_lists_episodes_anomalous_points_and_on_request_every_point(tmp_path):
    rng = np.random.default_rng(0)
    values = daily_sine(24 * 20) + rng.normal(0, 2, 24 * 20)
    values[400] += 40
    times = [(START + timedelta(hours=i)).isoformat() for i in range(len(values))]
    result = cli_json(write_series(tmp_path, times, values), "--all-points")
    assert set(result) == {"series", "alerts", "episodes", "anomalies", "points"}
    (episode,) = result["episodes"]
    # One alert, at the episode's start.
    assert result["alerts"] == [{"time": episode["start"], "direction": "up", "score": episode["score"],
                                 "kind": "spike", "episode": 0}]
    assert set(episode) == {"start", "end", "peak", "kind", "direction", "score", "points", "value", "expected",
                            "alert"}
    assert (episode["peak"], episode["kind"], episode["direction"]) == (times[400], "spike", "up")
    assert result["anomalies"][0]["episode"] == 0
    assert len(result["points"]) == len(values) and result["points"][400]["score"] > Z
    # The expected value of an ordinary point is close to it (the rhythm is in the baseline).
    ordinary = [p for p in result["points"] if p["score"] is not None and p["timestamp"] != times[400]]
    assert max(abs(p["value"] - p["expected"]) for p in ordinary) < 5 * 2  # 5 noise standard deviations


def test_the_text_report_has_one_line_per_episode(tmp_path):
    rng = np.random.default_rng(0)
    values = daily_sine(24 * 20) + rng.normal(0, 2, 24 * 20)
    values[400] -= 40
    times = [(START + timedelta(hours=i)).isoformat() for i in range(len(values))]
    code, out = cli("--csv", write_series(tmp_path, times, values), "--time-col", "time", "--value-col", "value",
                    "--z", Z)
    (line,) = out.stdout.splitlines()
    assert code == 0 and line.startswith("spike  down") and times[400] in line


# -- public series -----------------------------------------------------------------------------
# Properties a sensible detector has on them, not its outputs. statsmodels is a dev dependency.

sm = pytest.importorskip("statsmodels.api")


def test_the_nile_level_shift_is_found_in_a_public_dataset(tmp_path):
    # The annual Nile flow at Aswan, 1871-1970 (Cobb 1978): a textbook change point around 1898,
    # when the mean drops by about a quarter. It must be found, and little else.
    nile = sm.datasets.nile.load_pandas().data
    path = write_series(tmp_path, [f"{int(y)}-01-01T00:00:00Z" for y in nile.year], list(nile.volume))
    result = cli_json(path)
    shifts = [e for e in result["episodes"] if e["kind"] == "shift"]
    assert len(shifts) == 1 and 1896 <= int(shifts[0]["start"][:4]) <= 1900 and shifts[0]["direction"] == "down"
    assert len(result["episodes"]) <= 2


def anomalous_share(result) -> float:
    return len(result["anomalies"]) / result["series"]["points"]


def test_co2_its_yearly_cycle_is_found_and_gives_few_alerts(tmp_path):
    # Weekly CO2 at Mauna Loa, 1958-2001: a smooth rise plus a yearly swing of about 6 ppm, and
    # 59 missing weeks. 2 % of points is one odd week a year: an instrument record whose swings
    # the cycle and the trend explain has fewer than that, where a detector blind to the cycle
    # flagged 64 shifts (2.9 %).
    co2 = sm.datasets.co2.load_pandas().data.dropna()
    path = write_series(tmp_path, [t.strftime("%Y-%m-%dT00:00:00Z") for t in co2.index], list(co2.co2))
    result = cli_json(path)
    assert result["series"]["gaps"] == 59  # the missing weeks, kept as gaps
    assert result["series"]["period"] in (52, 53)  # 365.25 / 7 = 52.2 weeks
    assert anomalous_share(result) < 0.02


def test_elnino_its_yearly_cycle_is_found_and_gives_few_alerts(tmp_path):
    # Monthly Pacific sea surface temperature, 1950-2010 (a table of years x months): the yearly
    # cycle dominates; El Nino years wander but are part of the series' own variability. Same
    # bound as for co2: under one anomalous month in 50.
    table = sm.datasets.elnino.load_pandas().data
    times, values = [], []
    for _, row in table.iterrows():
        for month, column in enumerate(table.columns[1:], 1):
            times.append(f"{int(row.YEAR)}-{month:02d}-01T00:00:00Z")
            values.append(float(row[column]))
    result = cli_json(write_series(tmp_path, times, values))
    assert result["series"]["period"] == 12 and result["series"]["gaps"] == 0  # months of 28-31 days are one step
    assert anomalous_share(result) < 0.02


def test_sunspots_its_cycle_is_not_a_string_of_alerts(tmp_path):
    # Yearly sunspot numbers, 1700-2008: a cycle of 9 to 14 years whose height varies threefold.
    # Each cycle differs, so a few alerts can be fair; a detector that alerts on the cycle itself
    # flags its peaks, about one year in ten. Bound: under one year in 50.
    sun = sm.datasets.sunspots.load_pandas().data
    path = write_series(tmp_path, [f"{int(y)}-01-01T00:00:00Z" for y in sun.YEAR], list(sun.SUNACTIVITY))
    result = cli_json(path)
    assert result["series"]["period"] is None or 9 <= result["series"]["period"] <= 12
    assert anomalous_share(result) < 0.02


ELEC_VIC = Path(sm.__file__).parent / "tsa" / "stl" / "tests" / "results" / "mstl_elec_vic.csv"


@pytest.mark.skipif(not ELEC_VIC.exists(), reason="statsmodels installed without its test data")
def test_victorian_electricity_demand_holidays_are_found_and_weekends_are_not(tmp_path):
    # Hourly electricity demand of Victoria (Australia), January-May 2012, shipped with
    # statsmodels' tests: a daily and a weekly rhythm (weekends are lower). Public holidays look
    # like a Sunday on a weekday, so a sensible detector flags them; weekends it must expect.
    import pandas as pd

    demand = pd.read_csv(ELEC_VIC)
    path = write_series(tmp_path, [d.replace(" ", "T") for d in demand.ds], list(demand.y))
    result = cli_json(path)
    assert result["series"]["period"] == 168  # the week, not the day
    days = set()
    for e in result["episodes"]:
        first, last = datetime.fromisoformat(e["start"]).date(), datetime.fromisoformat(e["end"]).date()
        days |= {first + timedelta(days=d) for d in range((last - first).days + 1)}
    holidays = [datetime(2012, 3, 12).date(), datetime(2012, 4, 6).date(), datetime(2012, 4, 25).date()]
    assert all(day in days for day in holidays)  # Labour Day, Good Friday, Anzac Day
    weeks = result["series"]["judged"] / 168
    assert len(result["episodes"]) <= 2 * weeks  # a rhythm-blind detector raised 192 shifts here
    weekends = [e for e in result["episodes"] if datetime.fromisoformat(e["start"]).weekday() >= 5]
    assert len(weekends) <= weeks / 4  # a weekend is flagged in under a quarter of the weeks
