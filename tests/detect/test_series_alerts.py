"""The hold-off after a page (obslab.detect.series_alerts): table-driven on episodes, and end to
end on hand-built minute series through detect()."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from obslab.detect.series import Series, detect
from obslab.detect.series_alerts import ESCALATION, HOLD_OFF, hold_off
from obslab.detect.series_result import Episode

Z = 5.0  # given explicitly: a change of the command's default must not move these tests
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def episode(direction: str, score: float, alert: bool = True, kind: str = "spike") -> Episode:
    return Episode(start="", end="", peak="", kind=kind, direction=direction, score=score, points=1, value=0.0,
                   expected=None, alert=alert)


# Each case: (minutes after the first episode, direction, score, evidence to page) of the later
# episodes; the first is always ("up", 10.0) with the evidence; expected: which of them page.
CASES = [
    # inside the hold-off, the same direction, not twice as bad: the aftershock is held
    ([(30, "up", 12.0, True)], [True, False]),
    # exactly twice the score that paged is not more than ESCALATION x it: held
    ([(30, "up", 20.0, True)], [True, False]),
    # more than twice the score: an escalation pages
    ([(30, "up", 25.0, True)], [True, True]),
    # the other direction is news: a drop after a rise pages
    ([(30, "down", 10.0, True)], [True, True]),
    # at the hold-off's end still held; a minute later it pages again
    ([(240, "up", 10.0, True)], [True, False]),
    ([(241, "up", 10.0, True)], [True, True]),
    # the hold-off runs from the page, not from the episodes it held
    ([(100, "up", 10.0, True), (200, "up", 10.0, True), (300, "up", 10.0, True)], [True, False, False, True]),
    # an escalation starts its own hold-off, measured against its own score
    ([(30, "up", 25.0, True), (60, "up", 40.0, True), (90, "up", 60.0, True)], [True, True, False, True]),
    # an episode without the evidence never pages, and starts no hold-off
    ([(10, "down", 9.0, False), (20, "down", 9.0, True)], [True, False, True]),
    # a shift after a spike the same way within the hold-off: compared by score like any episode
    ([(30, "up", 3.0, True)], [True, False]),
]


@pytest.mark.parametrize("later, pages", CASES)
def test_hold_off(later, pages):
    episodes = [episode("up", 10.0)] + [episode(d, s, alert) for _, d, s, alert in later]
    starts = [START] + [START + m * MINUTE for m, *_ in later]
    assert [e.alert for e in hold_off(episodes, starts)] == pages


def test_the_constants_are_what_the_docs_say():
    assert (HOLD_OFF, ESCALATION) == (timedelta(hours=4), 2.0)  # docs/detection.md, "Alerts"


def minute_series(spikes: dict[int, float], n: int = 600) -> Series:
    """White noise (sd 1) around 100, one point a minute, with these points raised by these amounts."""
    values = 100.0 + np.random.default_rng(7).normal(0.0, 1.0, n)
    for i, amount in spikes.items():
        values[i] += amount
    times = [START + i * MINUTE for i in range(n)]
    return Series([t.isoformat() for t in times], times, [float(v) for v in values], n, 0, 0)


# spikes (minute: amount in noise sd), expected: (episodes, alerts)
SERIES_CASES = [
    ({300: 12.0}, (1, 1)),  # one spike well past 1.4 x z: one page
    ({300: 12.0, 330: 14.0}, (2, 1)),  # a second, alike, half an hour later: held
    ({300: 12.0, 330: 40.0}, (2, 2)),  # a second, more than twice as bad: escalates
    ({300: 12.0, 330: -14.0}, (2, 2)),  # a dip after the spike: the other direction pages
]


@pytest.mark.parametrize("spikes, expected", SERIES_CASES)
def test_hold_off_on_a_series(spikes, expected):
    result = detect(minute_series(spikes), Z, period=0)
    assert (len(result.episodes), len(result.alerts())) == expected
    assert result.alerts()[0]["time"] == result.points[300].timestamp  # the first spike pages, at its start
