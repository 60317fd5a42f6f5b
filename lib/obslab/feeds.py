"""The lab's two feed topics: updated metric windows (aggregated_metrics) and new or updated
incidents (anomalies), as JSON keyed by service, for consumers other than the store.

The store is the source of truth; a feed is a convenience. One producer serves both topics, made
on the first message, so a lab that never publishes never connects to a broker.
"""

from __future__ import annotations

import json

from obslab.jsonform import plain
from obslab.settings import Settings


def message(row: dict) -> tuple[bytes, bytes]:
    """(key, value) of one row on a feed: the service, and the row as JSON with ISO-8601 times."""
    return row["service"].encode(), json.dumps(plain(row)).encode()


class Feeds:
    """Publishes rows to the feed topics (at least once: a re-sent row is the same JSON again)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._producer = None

    def windows(self, rows: list[dict]) -> int:
        """Updated windows to the aggregated_metrics topic."""
        return self._send(self.settings.topic_aggregated_metrics, rows)

    def incidents(self, incidents: list) -> int:
        """New or updated incidents (obslab.detect.incidents.Incident) to the anomalies topic."""
        return self._send(self.settings.topic_anomalies, [i.row() for i in incidents])

    def _send(self, topic: str, rows: list[dict]) -> int:
        if not rows:
            return 0
        if self._producer is None:
            from obslab.broker import producer

            self._producer = producer(self.settings, linger_ms=5, max_block_ms=10_000)
        for row in rows:
            key, value = message(row)
            self._producer.send(topic, key=key, value=value)
        self._producer.flush(timeout=30)
        return len(rows)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
