"""What detect-series reports (obslab.detect.series_result): the JSON form, one text line per episode, one
alert per episode that has the evidence to page."""

from datetime import timedelta

import numpy as np

from obslab.detect.series_result import Episode, Result
from tests.detect.helpers import START, Z, cli, cli_json, daily_sine, write_series


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


def test_only_episodes_with_the_evidence_to_page_raise_an_alert_each_at_its_start():
    weak = Episode("t1", "t2", "t2", "spike", "up", 5.5, 2, 9.0, 3.0, alert=False)
    shift = Episode("t5", "t9", "t7", "shift", "down", 8.0, 5, 1.0, 4.0)
    result = Result([], [weak, shift], {"judged": 100})
    assert result.alerts() == [{"time": "t5", "direction": "down", "score": 8.0, "kind": "shift", "episode": 1}]
    assert result.as_dict()["alerts"] == result.alerts() and len(result.as_dict()["episodes"]) == 2
    assert result.footer(5) == "2 episodes (1 spike, 1 shift) in 100 judged points (z threshold 5)"
    assert result.episode_lines()[1] == "shift  down  t5 .. t9  peak t7  value=1  expected=4  score=8.0"
