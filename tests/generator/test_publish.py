"""The run loop (obslab.generator.publish): backfill, and the run report's JSON form."""

import json
import math
from datetime import datetime, timezone

from obslab.generator.run import RunPlan, generate
from obslab.settings import load_settings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def within(observed, expected, sd, z=3.29):
    """Inside a two-sided bound with a 1-in-1000 false-alarm chance."""
    return abs(observed - expected) <= z * sd



def test_backfill_writes_fault_free_history_before_the_run(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo", backfill_minutes=5)
    events = tmp_path / "e.jsonl"
    report, backfill = generate(RunPlan(to_file=events, store_truth=False, start=T0, duration_s=60), settings)
    times = [json.loads(line)["event_time"] for line in events.read_text().splitlines()]
    assert within(backfill.events_sent, 3000, math.sqrt(3000)) and within(report.events_sent, 600, math.sqrt(600))
    history = times[:backfill.events_sent]
    assert history[0].startswith("2026-03-01T08:55") and history[-1] < "2026-03-01T09:00"  # past timestamps first
    assert min(times[backfill.events_sent:]) >= "2026-03-01T09:00"


def test_the_run_report_s_json_form_has_every_field_and_iso_times(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo")
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", store_truth=False, start=T0, duration_s=90), settings)
    out = json.loads(json.dumps(report.as_dict()))
    assert set(out) == {"run_id", "scenario", "seed", "started_at", "event_time_end", "events_sent", "events_acked",
                        "events_failed", "seconds", "faults", "stopped_early", "first_error", "rate"}
    assert (out["started_at"], out["event_time_end"]) == ("2026-03-01T09:00:00+00:00", "2026-03-01T09:01:30+00:00")
    assert out["events_acked"] == out["events_sent"] > 0 and out["events_failed"] == 0
    # The fault cut short by the end of the run: started at 75 s (demo.yaml), ended with the run at 90 s.
    assert [(f["fault_id"], f["start"], f["end"]) for f in out["faults"]] == [
        ("f000", "2026-03-01T09:01:15+00:00", "2026-03-01T09:01:30+00:00")]
