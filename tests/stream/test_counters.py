import json
from datetime import datetime, timezone

from obslab.stream.counters import SinkCounters


def test_every_counter_survives_the_file_another_process_reads(tmp_path):
    # Each field set away from its default: a field that `save` or `load` dropped would come back as zero.
    counters = SinkCounters(batches=7, skipped_replays=2, events=5000, dead_letters=9, late=4, future=3,
                            endpoint_overflow=11, skipped_spans=6, published=40, errors=["broker away"],
                            last_watermark=datetime(2026, 12, 6, 1, 45, tzinfo=timezone.utc))
    path = tmp_path / "counters.json"
    counters.save(path)
    back = SinkCounters.load(path)
    assert back == counters
    assert back.last_watermark.tzinfo is not None  # still timezone-aware


def test_the_file_is_plain_json_with_the_watermark_as_iso_text(tmp_path):
    path = tmp_path / "counters.json"
    SinkCounters(events=3, last_watermark=datetime(2026, 12, 6, 1, 45, tzinfo=timezone.utc)).save(path)
    data = json.loads(path.read_text())
    assert data["events"] == 3 and data["last_watermark"] == "2026-12-06T01:45:00+00:00"
    assert SinkCounters.load(tmp_path / "absent.json") == SinkCounters()  # no file: no batch ran, all zero
