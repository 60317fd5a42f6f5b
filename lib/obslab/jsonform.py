"""The JSON form of reports and rows: what `--json`, the feed topics and the ground-truth files carry.

One rule for every one of them: datetimes become ISO-8601 text (`datetime.isoformat()`, so a UTC
time reads `2026-01-05T09:00:00+00:00`); dicts, lists and dataclasses are walked; everything else
is left as it is for `json.dumps`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime


def plain(value):
    """`value` as data `json.dumps` takes: datetimes as ISO text, dataclasses as dicts, tuples as lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    return value
