"""What the stream's sink did during one process's life (SinkCounters), and their file: a Spark
Connect server runs the sink, and the `obslab stream` that started the query reads them from there."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass
class SinkCounters:
    """What the sink did during this process's life."""

    batches: int = 0
    skipped_replays: int = 0
    events: int = 0
    dead_letters: int = 0
    late: int = 0
    future: int = 0
    endpoint_overflow: int = 0
    skipped_spans: int = 0  # spans that are no request (not SERVER): counted, not dead letters
    referred: int = 0  # records the fast path left to the full transform (obslab.stream.fastpath)
    last_watermark: datetime | None = None
    published: int = 0
    errors: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        """Write the counters to `path` at once (a reader never sees half a file)."""
        data = {**self.__dict__, "last_watermark": self.last_watermark.isoformat() if self.last_watermark else None}
        part = path.with_name(path.name + ".part")
        part.write_text(json.dumps(data))
        part.replace(path)

    @classmethod
    def load(cls, path: Path) -> "SinkCounters":
        """The counters `save` wrote; all zero when there is no file (no batch ran)."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        mark = data.pop("last_watermark", None)
        return cls(**data, last_watermark=datetime.fromisoformat(mark) if mark else None)
