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


# ------------------------------------------------------------------ the lead-in (GENERATE_LEAD_IN_SECONDS)

LEAD_SCENARIO = """\
name: lead-in
duration_seconds: {duration}
traffic: {{events_per_second: {rate}}}
faults:
  - {{type: error_surge, service: payments, start_seconds: {fault_at}, duration_seconds: 20, magnitude: 0.3}}
"""


def _lead_in_settings(tmp_path, lead_s: float, duration: int, rate: int, fault_at: int, **more):
    from obslab.settings import load_settings

    scenario = tmp_path / "lead-in.yaml"
    scenario.write_text(LEAD_SCENARIO.format(duration=duration, rate=rate, fault_at=fault_at))
    return load_settings(data_dir=tmp_path, scenario=str(scenario), seed=7, generate_lead_in_seconds=lead_s,
                         backfill_minutes=1, **more)


def test_a_live_run_s_timeline_has_history_lead_in_and_live_part_end_to_end():
    from obslab.generator.run import timeline

    now = datetime(2026, 1, 5, 9, 0, 0, 30_000, tzinfo=timezone.utc)
    live = timeline(RunPlan(), backfill_minutes=10, lead_in_s=45, duration_s=600, now=now)
    # Scenario second 0 is 45 s before now (on the next whole 100 ms), so the live part begins now.
    assert live.start == datetime(2026, 1, 5, 8, 59, 15, 100_000, tzinfo=timezone.utc)
    assert live.history_start == datetime(2026, 1, 5, 8, 49, 15, 100_000, tzinfo=timezone.utc)  # 10 min before
    assert live.live_from == datetime(2026, 1, 5, 9, 0, 0, 100_000, tzinfo=timezone.utc)
    assert live.end == datetime(2026, 1, 5, 9, 9, 15, 100_000, tzinfo=timezone.utc)
    # From a fixed start: the scenario is dated from there, the live part from 45 s in.
    fixed = timeline(RunPlan(start=datetime(2026, 1, 5, 8, tzinfo=timezone.utc)), 10, 45, 600, now)
    assert (fixed.start, fixed.live_from) == (datetime(2026, 1, 5, 8, tzinfo=timezone.utc),
                                              datetime(2026, 1, 5, 8, 0, 45, tzinfo=timezone.utc))
    # Without a lead-in, and in simulated time (everything goes out at once anyway), there is none.
    assert timeline(RunPlan(), 10, 0, 600, now).live_from == timeline(RunPlan(), 10, 0, 600, now).start
    simulated = timeline(RunPlan(max_rate=True, start=now), 10, 45, 600, now)
    assert simulated.start == simulated.live_from == now
    assert timeline(RunPlan(count=5), 0, 45, None, now).end is None  # a run bounded by its count only


def test_a_run_in_simulated_time_from_no_fixed_start_ends_at_or_before_now():
    from obslab.generator.run import COUNT_SPAN_MARGIN, timeline

    now = datetime(2026, 1, 5, 9, 0, 0, 30_000, tzinfo=timezone.utc)
    by_duration = timeline(RunPlan(max_rate=True), 0, 45, 600, now)
    # 600 s back from now, on the whole 100 ms at or before it: the last event is at most now.
    assert by_duration.start == datetime(2026, 1, 5, 8, 50, tzinfo=timezone.utc) and by_duration.end <= now
    to_file = timeline(RunPlan(to_file="x.jsonl"), 0, 45, 600, now)  # a file in simulated time too
    assert to_file.start == by_duration.start
    # 1,000 events at 10 a second take 100 s; dated back 125 s so that a slow patch still ends in the past.
    by_count = timeline(RunPlan(max_rate=True, count=1000), 0, 45, None, now, rate=10)
    assert COUNT_SPAN_MARGIN == 1.25 and by_count.start == datetime(2026, 1, 5, 8, 57, 55, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="needs a duration, or a count and an events-per-second rate"):
        timeline(RunPlan(max_rate=True, count=1000), 0, 45, None, now)


@pytest.mark.kafka
@pytest.mark.spark
def test_a_default_max_rate_run_is_counted_whole(spark, broker, lab_settings, tmp_path):
    from obslab.generator.run import generate
    from obslab.lab import Lab
    from obslab.stream.job import run_stream_job
    from tests.stream.helpers import lab_for

    # 20,000 events at 50 a second: 400 s of event time, which from now would reach ~5 minutes past the
    # stream's one-minute allowance for clocks ahead.
    settings = lab_for(lab_settings, tmp_path, scenario="clean", events_per_second=50.0, backfill_minutes=0)
    with Lab(settings) as lab:
        report, _ = generate(RunPlan(max_rate=True, count=20_000), settings, store=lab.store, sink=lab.events)
    generated_by = datetime.now(timezone.utc)
    assert report.events_sent == 20_000
    store = Lab(settings).store
    counted = run_stream_job(settings, available_now=True, spark=spark, store=store)
    assert counted.counters.events == 20_000 and counted.counters.future == 0, counted.counters
    assert store.query("SELECT sum(request_count) FROM service_metrics")[0][0] == 20_000
    assert store.query("SELECT max(window_start) FROM service_metrics")[0][0] <= generated_by


@pytest.mark.parametrize("lead", [600, 900])
def test_a_lead_in_as_long_as_the_run_is_a_clear_error(lead):
    from obslab.generator.run import timeline

    with pytest.raises(ConfigError, match=r"GENERATE_LEAD_IN_SECONDS \(\d+\) must be shorter than the run \(600 s"):
        timeline(RunPlan(), 0, lead, 600, datetime.now(timezone.utc))


def _event_times(lines) -> list[datetime]:
    return sorted(datetime.fromisoformat(json.loads(line)["event_time"].replace("Z", "+00:00")) for line in lines)


def _no_gap_no_overlap(times: list[datetime], first: datetime, end: datetime, rate: float) -> None:
    """Poisson arrivals at `rate` over [first, end): no hole, and no second holding two runs' events.

    Bounds (about 1 in 10^4 or less of failing by chance over the whole run): a gap of 0.5 s has
    chance exp(-0.5 rate) each, and a second of a Poisson(rate) count reaches 1.8 x rate (for rate
    >= 50) with chance < 1e-7, while a second generated twice holds ~2 x rate.
    """
    assert first <= times[0] and times[-1] < end
    assert (times[0] - first).total_seconds() < 0.5 and (end - times[-1]).total_seconds() < 0.5
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert max(gaps) < 0.5, f"a hole of {max(gaps):.2f} s in event time"
    per_second: dict[int, int] = {}
    for t in times:
        k = int((t - first).total_seconds())
        per_second[k] = per_second.get(k, 0) + 1
    assert max(per_second.values()) < 1.8 * rate, "some second was generated twice"


def test_a_live_run_with_a_lead_in_sends_it_at_once_then_goes_on_live(tmp_path):
    from obslab.generator.run import generate

    lead, rate = 600, 50
    settings = _lead_in_settings(tmp_path, lead, duration=lead + 2, rate=rate, fault_at=300)
    events = tmp_path / "lead-in.jsonl"
    before = datetime.now(timezone.utc)
    report, history = generate(RunPlan(to_file=events, realtime=True, store_truth=False), settings)
    after = datetime.now(timezone.utc)
    # The lead-in was not paced (else the run had lasted 600 s), and the scenario began 600 s before launch.
    assert (after - before).total_seconds() < lead
    assert before - timedelta(seconds=lead) < report.started_at <= after - timedelta(seconds=lead - 0.1)
    times = _event_times(events.read_text().splitlines())
    assert times[-1] <= after  # the live part is never dated ahead of the wall clock
    assert len(times) == history.events_sent + report.events_sent
    # History, lead-in and live part follow each other with no hole and no second sent twice.
    assert sum(t < report.started_at for t in times) == history.events_sent  # history before scenario second 0
    _no_gap_no_overlap(times, report.started_at - timedelta(minutes=1), report.event_time_end, rate)
    assert report.event_time_end == report.started_at + timedelta(seconds=lead + 2)
    # Ground truth keeps the scenario's times: the fault at scenario second 300, for 20 s.
    truth = [json.loads(line) for line in events.with_name("lead-in.faults.jsonl").read_text().splitlines()]
    rows = [row for row in truth if row.get("fault_id") == "f000"]  # as it started, then as it ended
    assert {datetime.fromisoformat(row["start_time"]) for row in rows} == {report.started_at + timedelta(seconds=300)}
    assert datetime.fromisoformat(rows[-1]["end_time"]) == report.started_at + timedelta(seconds=320)


def test_plain_generate_has_no_lead_in_by_default():
    from obslab.settings import Settings

    assert Settings.model_fields["generate_lead_in_seconds"].default == 0


@pytest.mark.kafka
def test_history_lead_in_and_live_part_reach_kafka_once_each_with_the_fault_s_truth_in_the_store(
        broker, lab_settings, tmp_path):
    from kafka import TopicPartition
    from kafka.admin import NewTopic

    from obslab.broker import admin_client, consumer
    from obslab.generator.run import generate
    from obslab.lab import Lab

    lead, rate = 30, 50
    topic = "lead_in_events"
    admin = admin_client(lab_settings)
    admin.create_topics([NewTopic(topic, lab_settings.kafka_partitions, 1)])
    admin.close()
    local = _lead_in_settings(tmp_path, lead, duration=lead + 3, rate=rate, fault_at=10)
    settings = lab_settings.model_copy(update={k: getattr(local, k) for k in (
        "data_dir", "duckdb_path", "scenario", "seed", "generate_lead_in_seconds", "backfill_minutes")} |
        {"topic_raw_events": topic})
    with Lab(settings) as lab:
        store = lab.store
        report, history = generate(RunPlan(), settings, store=store, sink=lab.events)
    assert report.events_acked == report.events_sent and history.events_acked == history.events_sent
    expected = history.events_sent + report.events_sent

    c = consumer(settings)
    parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    lines, deadline = [], datetime.now(timezone.utc) + timedelta(seconds=60)
    while len(lines) < expected and datetime.now(timezone.utc) < deadline:
        for records in c.poll(timeout_ms=500).values():
            lines.extend(r.value for r in records)
    c.close()
    assert len(lines) == expected and len({json.loads(v)["event_id"] for v in lines}) == expected  # each once
    times = _event_times(lines)
    _no_gap_no_overlap(times, report.started_at - timedelta(minutes=1), report.event_time_end, rate)
    rows = store.query("SELECT start_time, end_time FROM injected_incidents WHERE run_id = ? AND fault_id = 'f000'",
                       [report.run_id])
    assert rows == [(report.started_at + timedelta(seconds=10), report.started_at + timedelta(seconds=30))]
