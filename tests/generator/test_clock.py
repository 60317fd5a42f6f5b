from datetime import datetime, timedelta, timezone

import pytest

from obslab.generator.clock import SimulatedClock, WallClock


def test_a_wall_clock_from_a_given_start_reads_that_start_and_runs_at_wall_pace():
    start = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
    clock = WallClock(start)
    first = clock.now()
    assert start <= first < start + timedelta(seconds=60)  # not the wall time (a bound, not a timing)
    assert clock.now() >= first  # and it moves on
    assert abs(WallClock().now() - datetime.now(timezone.utc)) < timedelta(seconds=60)  # no start: the wall time


def test_clocks_refuse_naive_starts():
    with pytest.raises(ValueError, match="timezone-aware"):
        WallClock(datetime(2026, 1, 5))
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulatedClock(datetime(2026, 1, 5))
