"""The JSON form (obslab.jsonform): datetimes as ISO text, containers and dataclasses walked, the rest as is."""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from obslab.jsonform import plain

T = datetime(2026, 1, 5, 9, 0, 30, 250000, tzinfo=timezone.utc)


@dataclass
class Row:
    at: datetime
    names: list


@pytest.mark.parametrize("value, expected", [
    (T, "2026-01-05T09:00:30.250000+00:00"),  # aware: the offset is kept
    (datetime(2026, 1, 5, 9, 0), "2026-01-05T09:00:00"),  # naive: no offset invented
    (T.astimezone(timezone(timedelta(hours=2))), "2026-01-05T11:00:30.250000+02:00"),  # another zone stays its own
    ({"a": T, "b": None}, {"a": "2026-01-05T09:00:30.250000+00:00", "b": None}),  # dict values
    ([T, 1, "x"], ["2026-01-05T09:00:30.250000+00:00", 1, "x"]),  # list items
    ((1, T), [1, "2026-01-05T09:00:30.250000+00:00"]),  # a tuple becomes a list, as json.dumps writes it
    ({"rows": [{"at": T}]}, {"rows": [{"at": "2026-01-05T09:00:30.250000+00:00"}]}),  # nested
    (Row(T, ["a"]), {"at": "2026-01-05T09:00:30.250000+00:00", "names": ["a"]}),  # a dataclass, as a dict
    (3.5, 3.5),  # everything else as is
    (None, None),
])
def test_plain(value, expected):
    assert plain(value) == expected
    json.dumps(plain(value))  # and json takes it


def test_plain_leaves_its_input_alone():
    row = {"at": T}
    plain(row)
    assert row == {"at": T}
