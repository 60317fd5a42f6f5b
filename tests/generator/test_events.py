"""The event stream: event format, fault shapes, and the traffic model (Poisson arrivals whatever the
tick length, over-dispersion, seasonality, benign events, cascades).

Statistical bounds come from the distributions the traffic model promises (Poisson counts,
binomial error counts, chi-square dispersion statistics), with fixed seeds and a small, stated
false-alarm probability; they are not tuned to what the generator happens to produce.
"""

import hashlib
import json
import math
from datetime import datetime, timedelta, timezone
from statistics import NormalDist

import duckdb
import numpy as np
import pandas as pd
import pytest

from obslab.generator.clock import SimulatedClock
from obslab.generator.events import EventStream
from obslab.generator.publish import publish_events
from obslab.generator.scenario import load_scenario, parse_scenario
from obslab.generator.sinks import FileSink
from obslab.schema import EVENT

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
Z = NormalDist().inv_cdf(1 - 0.0005)  # two-sided bound with a 1-in-1000 false-alarm chance (3.29)


def events_of(scenario, seed=7, seconds=600, start=T0, rate=None):
    stream = EventStream(scenario, seed, start, rate)
    out = []
    t = start
    while t < start + timedelta(seconds=seconds):
        batch = stream.tick(t, 1.0)
        out.extend(batch.json_lines())
        t += timedelta(seconds=1)
    return out


def frame_of(scenario, seed=7, seconds=600, start=T0, rate=None, tick=1.0) -> pd.DataFrame:
    """Events of a run cut into ticks of `tick` seconds, as columns; `s` = seconds since T0."""
    stream = EventStream(scenario, seed, start, rate)
    batches, t, end = [], start, start + timedelta(seconds=seconds)
    while t < end:
        span = min(tick, (end - t).total_seconds())
        batches.append(stream.tick(t, span))
        t += timedelta(seconds=span)
    index = np.concatenate([b.endpoint_index for b in batches])
    names = np.array([s for s, _ in stream.endpoints], dtype=object)
    paths = np.array([e for _, e in stream.endpoints], dtype=object)
    times = np.concatenate([b.times_ms for b in batches])
    return pd.DataFrame({"s": (times - int(T0.timestamp() * 1000)) / 1000.0, "service": names[index],
                         "endpoint": paths[index], "latency_ms": np.concatenate([b.latency_ms for b in batches]),
                         "error": np.concatenate([b.status_code for b in batches]) >= 400})


def digest(lines):
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def chi2_quantile(q: float, df: int) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (good to ~1 % for df >= 30)."""
    z = NormalDist().inv_cdf(q)
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def per_minute(df: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    """(service x whole minute in [first, last)) -> requests."""
    inside = df[(df.s >= first * 60) & (df.s < last * 60)]
    counts = inside.groupby([inside.service, (inside.s // 60).astype(int)]).size().unstack(fill_value=0)
    return counts.reindex(columns=range(first, last), fill_value=0)


def within(observed: float, expected: float, sd: float) -> bool:
    return abs(observed - expected) <= Z * sd


# ---------------------------------------------------------------------------- format and determinism


def test_same_seed_same_events_other_seed_other_events():
    mixed = load_scenario("mixed")
    first, second = digest(events_of(mixed, seed=7)), digest(events_of(mixed, seed=7))
    assert first == second  # identical run to run
    assert digest(events_of(mixed, seed=8)) != first  # a different seed differs


def test_event_json_has_the_schema_fields_and_parses_in_duckdb(tmp_path):
    lines = events_of(load_scenario("demo"), seconds=30)
    assert within(len(lines), 300, math.sqrt(300))  # Poisson, 10/s for 30 s
    first = json.loads(lines[0])
    assert list(first) == EVENT.column_names
    assert first["event_time"].endswith("Z")
    assert len({json.loads(line)["event_id"] for line in lines}) == len(lines)  # unique
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows = duckdb.sql(f"SELECT min(event_time), max(event_time), count(*) FROM read_json_auto('{path}')").fetchall()[0]
    assert rows[0] >= T0 and rows[1] < T0 + timedelta(seconds=30) and rows[2] == len(lines)


def test_naive_start_time_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        EventStream(load_scenario("clean"), 1, datetime(2026, 1, 1))


# ---------------------------------------------------------------------------- faults


def _frame(lines):
    df = pd.DataFrame([json.loads(line) for line in lines])
    df["t"] = pd.to_datetime(df["event_time"])
    return df


def _window(df, service, start_s, end_s, endpoint=None):
    sel = (df.service == service) & (df.t >= T0 + timedelta(seconds=start_s)) & (df.t < T0 + timedelta(seconds=end_s))
    if endpoint:
        sel &= df.endpoint == endpoint
    return df[sel]


def one_fault(kind, service="payments", magnitude=None, endpoint=None, rate=60):
    fault = {"type": kind, "service": service, "start_seconds": 300, "duration_seconds": 300}
    if magnitude is not None:
        fault["magnitude"] = magnitude
    if endpoint:
        fault["endpoint"] = endpoint
    text = json.dumps({"name": kind, "traffic": {"events_per_second": rate}, "faults": [fault]})
    return _frame(events_of(parse_scenario(text), seconds=900))


def test_normal_traffic_follows_the_service_profiles():
    df = _frame(events_of(load_scenario("clean"), seconds=600, rate=60))
    means = df.groupby("service").latency_ms.mean()
    assert means["checkout"] == pytest.approx(150, rel=0.05)  # per-service baselines
    assert means["payments"] == pytest.approx(200, rel=0.05)
    assert means["search"] == pytest.approx(50, rel=0.05)
    assert df.latency_ms.min() >= 10  # floor
    errors = df.status_code >= 400
    for service, rate in {"checkout": 0.01, "payments": 0.015, "search": 0.005}.items():  # each its own rate
        mine = errors[df.service == service]
        assert within(mine.mean(), rate, math.sqrt(rate * (1 - rate) / len(mine))), service
    assert set(df.status_code[errors]) <= {500, 503, 504, 429}
    assert set(df.status_code[~errors]) <= {200, 201, 204}


def test_latency_spike_multiplies_latency_only_inside_the_fault():
    df = one_fault("latency_spike", magnitude=8)
    before = _window(df, "payments", 0, 300).latency_ms.mean()
    during = _window(df, "payments", 300, 600).latency_ms.mean()
    assert during / before == pytest.approx(8, rel=0.1)
    assert _window(df, "search", 300, 600).latency_ms.mean() == pytest.approx(50, rel=0.1)  # others untouched


def test_error_surge_raises_the_error_rate():
    df = one_fault("error_surge", magnitude=0.3)
    assert (_window(df, "payments", 300, 600).status_code >= 400).mean() == pytest.approx(0.3, abs=0.05)
    assert (_window(df, "payments", 600, 900).status_code >= 400).mean() < 0.06  # over when it ends


def test_latency_degradation_ramps_up():
    df = one_fault("latency_degradation", magnitude=5)
    early = _window(df, "payments", 300, 360).latency_ms.mean()
    late = _window(df, "payments", 540, 600).latency_ms.mean()
    assert early < 300 < 700 < late  # from ~1.2x towards 5x of 200 ms


def test_endpoint_outage_fails_one_endpoint_with_503():
    df = one_fault("endpoint_outage", endpoint="/api/refund")
    hit = _window(df, "payments", 300, 600, "/api/refund")
    assert len(hit) > 100 and (hit.status_code == 503).all()
    other = _window(df, "payments", 300, 600, "/api/payment/process")
    assert (other.status_code >= 400).mean() < 0.06


def test_traffic_drop_removes_the_given_fraction():
    df = one_fault("traffic_drop", service="search", magnitude=0.7)
    normal = len(_window(df, "search", 0, 300))
    dropped = len(_window(df, "search", 300, 600))
    assert dropped / normal == pytest.approx(0.3, abs=0.05)


def test_random_faults_respect_probability_and_quiet_gap():
    scenario = load_scenario("random")
    stream = EventStream(scenario, 3, T0)
    faults = []
    t = T0
    for _ in range(4 * 60):  # four simulated hours in 1-minute ticks (the chance is still rolled per second)
        batch = stream.tick(t, 60.0)
        faults.extend(batch.started)
        t += timedelta(seconds=60)
    assert 3 <= len(faults) <= 40  # p = 0.005/s gives a handful per hour, not one per event
    gaps = [(b.start - a.end).total_seconds() for a, b in zip(faults, faults[1:])]
    assert min(gaps) >= scenario.random.min_quiet_seconds
    assert {f.service for f in faults} <= {"checkout", "payments", "search"}
    again = EventStream(scenario, 3, T0)
    t, replay = T0, []
    for _ in range(4 * 60):
        replay.extend(again.tick(t, 60.0).started)
        t += timedelta(seconds=60)
    assert replay == faults  # random mode is deterministic too


def test_random_faults_pick_among_the_scenario_s_services():
    scenario = parse_scenario("name: r\nservices: [{name: inventory, endpoints: [/api/stock], latency_ms: 30}]\n"
                              "random: {anomaly_probability: 0.02, min_quiet_seconds: 10}\n")
    stream = EventStream(scenario, 5, T0)
    started = [f for minute in range(60) for f in stream.tick(T0 + timedelta(minutes=minute), 60.0).started]
    assert started and {f.service for f in started} == {"inventory"}
    assert {f.endpoint for f in started if f.type == "endpoint_outage"} <= {"/api/stock"}


# ---------------------------------------------------------------------------- arrivals


@pytest.mark.parametrize("tick", [
    pytest.param(0.1, marks=pytest.mark.slow),  # live ticks: 18,600 of them
    1.0, 7.3, 60.0,  # 1 s, unaligned, the longest simulated tick
])
def test_requests_per_service_minute_are_poisson_whatever_the_tick_length(tick):
    minutes = 30
    start = T0 + timedelta(milliseconds=350)  # ticks not on whole seconds either
    df = frame_of(load_scenario("clean"), seed=11, start=start, seconds=(minutes + 1) * 60, rate=30, tick=tick)
    counts = per_minute(df, 1, minutes + 1).to_numpy()  # whole minutes only; 10/s per service
    # Poisson: the dispersion statistic sum((x - mean)^2 / mean) per service is chi-square with
    # (minutes - 1) degrees of freedom; summed over the three services, 3 (minutes - 1).
    statistic = sum(((row - row.mean()) ** 2).sum() / row.mean() for row in counts)
    dof = 3 * (minutes - 1)
    assert chi2_quantile(0.0005, dof) <= statistic <= chi2_quantile(0.9995, dof), statistic / dof  # var/mean ~ 1
    expected = 10 * 60 * minutes  # requests per service
    for row in counts:
        assert within(row.sum(), expected, math.sqrt(expected))  # the same rate whatever the tick


def test_over_dispersion_holds_per_block_of_event_time_whatever_the_tick():
    cv = 0.3
    scenario = parse_scenario(f"name: od\ntraffic: {{events_per_second: 30, dispersion: {cv}, dispersion_seconds: 60}}\n")
    minutes = 60
    runs = {tick: per_minute(frame_of(scenario, seed=4, seconds=minutes * 60, tick=tick), 0, minutes).to_numpy()
            for tick in (1.0, 60.0)}
    # Requests in a minute: Poisson with mean mu x m, m ~ gamma(mean 1, cv), so var = mu + (cv mu)^2 and
    # (var - mean) / mean^2 estimates cv^2. The sample variance of k gamma draws has a relative
    # standard deviation of sqrt(2 / (k - 1) + 6 cv^2 / k) (6 cv^2: the gamma's excess kurtosis);
    # averaged over the three services, that over sqrt(3).
    relative_sd = math.sqrt((2 / (minutes - 1) + 6 * cv**2 / minutes) / 3)
    for tick, counts in runs.items():
        estimate = np.mean([(row.var(ddof=1) - row.mean()) / row.mean() ** 2 for row in counts])
        assert abs(estimate / cv**2 - 1) <= Z * relative_sd, (tick, estimate)
    # The multipliers belong to minutes of event time, not to ticks: both runs share them, so their
    # counts move together (expected correlation mu cv^2 / (mu cv^2 + 1) = 0.98; unshared: ~0).
    assert np.corrcoef(runs[1.0].ravel(), runs[60.0].ravel())[0, 1] > 0.9


def test_poisson_by_default_even_at_a_high_rate_with_live_ticks():
    # At 1,000 events/s a fixed count per 0.1 s tick made var/mean 0.02; random arrivals keep it ~1.
    minutes = 15
    df = frame_of(load_scenario("clean"), seed=2, seconds=minutes * 60, rate=1000, tick=0.1)
    counts = per_minute(df, 0, minutes).to_numpy()
    statistic = sum(((row - row.mean()) ** 2).sum() / row.mean() for row in counts)
    dof = 3 * (minutes - 1)
    assert chi2_quantile(0.0005, dof) <= statistic <= chi2_quantile(0.9995, dof), statistic / dof


# ---------------------------------------------------------------------------- seasonality


def _rhythm(df: pd.DataFrame, period: float, bin_seconds: float = 10.0) -> tuple[float, float, int]:
    """(amplitude, peak as seconds into the cycle counted from the Unix epoch, events) of the
    first Fourier component of the event counts at this period."""
    epoch_s = df.s.to_numpy() + T0.timestamp()
    bins = np.floor(epoch_s / bin_seconds)
    unique, counts = np.unique(bins, return_counts=True)
    phase = 2 * np.pi * ((unique + 0.5) * bin_seconds) / period
    c = (counts * np.exp(-1j * phase)).sum()
    total = counts.sum()
    return 2 * abs(c) / total, (-np.angle(c) % (2 * np.pi)) * period / (2 * np.pi), total


def test_daily_rhythm_has_the_declared_amplitude_and_phase_whatever_the_start():
    period, amplitude, peak = 3600, 0.5, 900
    scenario = parse_scenario(f"name: s\ntraffic: {{events_per_second: 60, seasonality: "
                              f"{{period_seconds: {period}, amplitude: {amplitude}, peak_at_seconds: {peak}}}}}\n")
    # Two runs of two whole cycles each, started at different, unaligned times with different seeds.
    for seed, start in ((1, T0 + timedelta(minutes=20)), (2, T0 + timedelta(hours=3, minutes=47, seconds=13))):
        df = frame_of(scenario, seed=seed, start=start, seconds=2 * period, tick=60.0)
        got_amplitude, got_peak, n = _rhythm(df, period)
        # With n Poisson events the estimates have sd sqrt(2/n) (amplitude) and sqrt(2/n)/a radians (phase).
        sd = math.sqrt(2 / n)
        assert within(got_amplitude, amplitude, sd), got_amplitude
        assert within(got_peak, peak, sd / amplitude * period / (2 * np.pi)), got_peak  # the same clock phase
    # Peak and trough are visible minute by minute: 09:15 against 09:45.
    df = frame_of(scenario, seed=3, seconds=period, tick=60.0)
    at_peak, at_trough = len(df[(df.s >= 840) & (df.s < 960)]), len(df[(df.s >= 2640) & (df.s < 2760)])
    assert at_peak / at_trough == pytest.approx((1 + amplitude) / (1 - amplitude), rel=0.1)


def test_weekly_rhythm_peaks_on_the_declared_day():
    period = 600  # a compressed day; a week is 7 of them, starting on "Monday" (4 periods after the epoch)
    scenario = parse_scenario(f"name: w\ntraffic: {{events_per_second: 60, seasonality: {{period_seconds: {period}, "
                              "amplitude: 0.3, peak_at_seconds: 150, weekly_amplitude: 0.4, weekly_peak_day: 2.5}}\n")
    df = frame_of(scenario, seed=5, seconds=14 * period, tick=60.0)  # two whole weeks
    sd = math.sqrt(2 / len(df))
    weekly_amplitude, weekly_peak, _ = _rhythm(df, 7 * period)
    assert within(weekly_amplitude, 0.4, sd)
    # Peak on day 2.5 of a week that starts 4 periods after the epoch: 6.5 periods into an epoch week.
    assert within(weekly_peak, 6.5 * period, sd / 0.4 * 7 * period / (2 * np.pi)), weekly_peak / period
    daily_amplitude, daily_peak, _ = _rhythm(df, period)
    assert within(daily_amplitude, 0.3, sd) and within(daily_peak, 150, sd / 0.3 * period / (2 * np.pi))


# ---------------------------------------------------------------------------- benign events


BENIGN = """
name: benign
traffic: {events_per_second: 60}
benign:
  - {type: flash_crowd, service: search, start_seconds: 300, duration_seconds: 300, magnitude: 2.5}
  - {type: drift, service: payments, start_seconds: 300, duration_seconds: 600, magnitude: 0.5}
  - {type: deploy_blip, service: checkout, start_seconds: 400, duration_seconds: 60, magnitude: 0.1}
"""


def test_benign_events_have_the_declared_shapes():
    df = frame_of(parse_scenario(BENIGN), seed=9, seconds=1200)

    def part(service, start, end):
        return df[(df.service == service) & (df.s >= start) & (df.s < end)]

    # Flash crowd: search's traffic x2.5 for its duration, with normal errors and latency.
    before, crowd, after = part("search", 0, 300), part("search", 300, 600), part("search", 600, 900)
    ratio_sd = 2.5 * math.sqrt(1 / len(crowd) + 1 / len(before))  # of a ratio of Poisson counts
    assert within(len(crowd) / len(before), 2.5, ratio_sd) and within(len(after) / len(before), 1, ratio_sd / 2.5)
    assert within(crowd.error.mean(), 0.005, math.sqrt(0.005 * 0.995 / len(crowd)))
    assert within(crowd.latency_ms.mean(), before.latency_ms.mean(), 2 * 50 * 0.2 / math.sqrt(len(before)))
    # Drift: payments' latency creeps linearly to +50 % at its end, then is back to normal.
    first, last = part("payments", 300, 360).latency_ms.mean(), part("payments", 840, 900).latency_ms.mean()
    assert first == pytest.approx(200 * (1 + 0.5 * 0.05), rel=0.03)  # the ramp at the minute's middle
    assert last == pytest.approx(200 * (1 + 0.5 * 0.95), rel=0.03)
    assert part("payments", 900, 1200).latency_ms.mean() == pytest.approx(200, rel=0.03)
    # Deploy blip: a minute of +10 % errors and x1.2 latency on checkout.
    blip, calm = part("checkout", 400, 460), part("checkout", 0, 300)
    assert within(blip.error.mean(), 0.11, math.sqrt(0.11 * 0.89 / len(blip)))
    assert blip.latency_ms.mean() / calm.latency_ms.mean() == pytest.approx(1.2, rel=0.03)
    assert within(part("checkout", 460, 1200).error.mean(), 0.01, math.sqrt(0.01 * 0.99 / len(part("checkout", 460, 1200))))


def test_benign_events_start_and_end_like_faults_and_say_they_are_benign():
    stream = EventStream(parse_scenario(BENIGN), 1, T0)
    started = [f for m in range(20) for f in stream.tick(T0 + timedelta(minutes=m), 60.0).started]
    assert [(f.fault_id, f.type, f.benign, f.root_cause) for f in started] == [
        ("b000", "flash_crowd", True, "search"), ("b001", "drift", True, "payments"),
        ("b002", "deploy_blip", True, "checkout")]


# ---------------------------------------------------------------------------- cascades


CASCADE = """
name: cascade-test
traffic: {events_per_second: 150}
services:
  - name: checkout
    calls: [{service: payments, share: 0.5, lag_seconds: 5}]
  - name: payments
  - name: search
faults:
  - {type: error_surge, service: payments, start_seconds: 300, duration_seconds: 300, magnitude: 0.4}
  - {type: latency_spike, service: payments, start_seconds: 700, duration_seconds: 200, magnitude: 8}
  - {type: traffic_drop, service: payments, start_seconds: 1000, duration_seconds: 100, magnitude: 0.5}
"""


def test_a_fault_in_a_callee_shows_in_the_caller_for_the_declared_share_and_lag():
    df = frame_of(parse_scenario(CASCADE), seed=13, seconds=1200)

    def checkout(start, end):
        return df[(df.service == "checkout") & (df.s >= start) & (df.s < end)]

    def errors_like(rows, p):
        return within(rows.error.sum(), p * len(rows), math.sqrt(len(rows) * p * (1 - p)))

    # Errors: half of checkout's requests call payments and fail with payments' 40 %, 5 s later.
    surge = 0.5 * 0.4 + 0.5 * 0.01
    assert errors_like(checkout(0, 300), 0.01)
    assert errors_like(checkout(300, 305), 0.01)  # not yet: the lag
    assert errors_like(checkout(305, 605), surge)
    assert errors_like(checkout(606, 700), 0.01)  # over 5 s after payments recovered
    # Latency: the calling half waits for payments' extra 7 x 200 ms; the other half does not.
    slow = lambda rows: (rows.latency_ms > 1000).mean()  # noqa: E731 - normal checkout latency is 150 +- 30 ms
    assert slow(checkout(700, 705)) == 0  # the lag again
    spike = checkout(705, 900)
    assert within(slow(spike), 0.5, math.sqrt(0.25 / len(spike)))
    assert spike[spike.latency_ms > 1000].latency_ms.mean() == pytest.approx(150 + 1400, rel=0.05)
    # A traffic drop in payments does not propagate: checkout keeps its traffic.
    calm, drop = len(checkout(900, 1000)), len(checkout(1000, 1100))
    assert within(drop, calm, math.sqrt(drop + calm))


def test_cascade_effects_are_faults_of_their_own_with_the_root_cause():
    stream = EventStream(parse_scenario(CASCADE), 1, T0)
    faults = {f.fault_id: f for m in range(20) for f in stream.tick(T0 + timedelta(minutes=m), 60.0).started}
    assert sorted(faults) == ["f000", "f000>checkout", "f001", "f001>checkout", "f002"]  # a drop propagates nowhere
    root, effect = faults["f000"], faults["f000>checkout"]
    assert (root.root_cause, root.cause_fault_id) == ("payments", None)
    assert (effect.type, effect.service, effect.root_cause, effect.cause_fault_id, effect.benign) == (
        "error_surge", "checkout", "payments", "f000", False)
    assert effect.start - root.start == effect.end - root.end == timedelta(seconds=5)
    assert effect.magnitude == pytest.approx(0.5 * 0.4)  # the error probability it adds to checkout as a whole
    spike = faults["f001>checkout"]
    assert spike.type == "latency_spike" and spike.magnitude == pytest.approx(1 + 0.5 * 1400 / 150, abs=1e-4)  # mean x


def test_cascades_follow_chains_of_calls_with_shares_and_lags_adding_up():
    scenario = parse_scenario("""
name: chain
services:
  - {name: web, endpoints: [/], latency_ms: 20, calls: [{service: api, share: 0.5, lag_seconds: 2}]}
  - {name: api, endpoints: [/v1/a, /v1/b], latency_ms: 40, calls: [{service: db, share: 0.8, lag_seconds: 3}]}
  - {name: db, endpoints: [/q, /w], latency_ms: 5}
faults:
  - {type: endpoint_outage, service: db, endpoint: /w, start_seconds: 100, duration_seconds: 60}
""")
    stream = EventStream(scenario, 1, T0)
    faults = {f.fault_id: f for f in stream.tick(T0, 600.0).started}
    assert sorted(faults) == ["f000", "f000>api", "f000>api>web"]
    api, web = faults["f000>api"], faults["f000>api>web"]
    # One endpoint of two: half of api's calls to db fail, so 0.8 x 0.5 of api's requests; web: 0.5 of that.
    assert (api.type, api.magnitude, api.start - faults["f000"].start) == ("error_surge", 0.4, timedelta(seconds=3))
    assert (web.magnitude, web.start - faults["f000"].start) == (0.2, timedelta(seconds=5))
    assert {f.root_cause for f in faults.values()} == {"db"} and web.cause_fault_id == "f000"


# ---------------------------------------------------------------------------- services


def test_a_scenario_s_own_service_gets_its_endpoints_latency_and_traffic():
    scenario = parse_scenario("""
name: four
traffic: {events_per_second: 40}
services:
  - {name: checkout}
  - {name: payments}
  - {name: search}
  - {name: inventory, endpoints: [/api/stock, /api/reserve], latency_ms: 80, error_rate: 0.05, share: 2}
""")
    df = frame_of(scenario, seed=3, seconds=600)
    inventory = df[df.service == "inventory"]
    assert within(len(inventory), 40 * 600 * 2 / 5, math.sqrt(40 * 600 * 2 / 5))  # share 2 of 5
    assert set(inventory.endpoint) == {"/api/stock", "/api/reserve"}
    assert inventory.latency_ms.mean() == pytest.approx(80, rel=0.02)
    assert within(inventory.error.mean(), 0.05, math.sqrt(0.05 * 0.95 / len(inventory)))


def test_rate_is_the_mean_in_simulated_time(tmp_path):
    stream = EventStream(load_scenario("clean"), 1, T0, events_per_second=10)
    sink = FileSink(tmp_path / "e.jsonl")
    report = publish_events(stream, SimulatedClock(T0), sink, None, duration_s=600)
    sink.close()
    assert within(report.events_sent, 6000, math.sqrt(6000))  # 10/s held over ten minutes, Poisson, no drift
