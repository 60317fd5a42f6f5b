"""Where the generator's time comes from: the wall clock, or a simulated one that never waits."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone


class WallClock:
    """Real time: `sleep_until` waits. Given a `start`, the clock reads `start` now and runs at the
    wall clock's pace from there (a live run dated from a fixed start)."""

    simulated = False

    def __init__(self, start: datetime | None = None):
        if start is not None and start.tzinfo is None:
            raise ValueError("WallClock needs a timezone-aware start (e.g. tzinfo=timezone.utc)")
        self._offset = start - datetime.now(timezone.utc) if start is not None else timedelta(0)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self._offset

    def sleep_until(self, when: datetime) -> None:
        delay = (when - self.now()).total_seconds()
        if delay > 0:
            time.sleep(delay)


class SimulatedClock:
    """Simulated time starting at `start`: `sleep_until` jumps there at once."""

    simulated = True

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs a timezone-aware start (e.g. tzinfo=timezone.utc)")
        self._now = start.astimezone(timezone.utc)

    def now(self) -> datetime:
        return self._now

    def sleep_until(self, when: datetime) -> None:
        if when > self._now:
            self._now = when
