"""detect-series (obslab.detect.series): a given period, the rules and episodes on made-up series with known
anomalies, and properties on public series that installed packages ship (no download at test time).
Reading a file is tested in test_series_io.py, the rhythm in test_period.py, the level model in
test_baseline.py and the report's forms in test_series_result.py."""

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from obslab.detect.series import detect
from tests.detect.helpers import START, Z, cli, cli_json, daily_sine, regular, write_series


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


def test_a_series_too_short_to_judge_is_reported_not_refused(tmp_path):
    times = [(START + timedelta(hours=i)).isoformat() for i in range(10)]
    result = cli_json(write_series(tmp_path, times, range(10)))
    assert result["series"]["judged"] == 0 and result["series"]["judged_from"] is None
    assert result["episodes"] == []


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
