"""Where a stream starts (`obslab.stream.start.plan_start`): the store's position, the topic and the checkpoint."""

import json

import pytest

from obslab.errors import OffsetsMismatchError
from obslab.stream.start import CheckpointState, StorePosition, TopicState, plan_start

NO_CHECKPOINT = CheckpointState(started=False, committed=None)
TOPIC_NOW = TopicState("id-1", {0: (0, 500), 1: (0, 480), 2: (0, 510)})  # partition -> (first, end) offset


def _stored(offsets=None, topic_id="id-1", windows=None):
    offsets = offsets or {}
    return StorePosition(offsets, topic_id if offsets else None, bool(offsets) if windows is None else windows, [60])


@pytest.mark.parametrize(
    "stored, now, checkpoint, expected",
    [
        # A new store and no checkpoint: the whole topic.
        (_stored(), TOPIC_NOW, NO_CHECKPOINT, ("topic start", "earliest")),
        # The checkpoint was deleted or renamed: start where the store stopped counting.
        (_stored({0: 400, 1: 390, 2: 410}), TOPIC_NOW, NO_CHECKPOINT,
         ("store offsets", {"0": 400, "1": 390, "2": 410})),
        # A partition added since the store last counted is read from its start (-2: Spark's "earliest").
        (_stored({0: 400, 1: 390}), TOPIC_NOW, NO_CHECKPOINT, ("store offsets", {"0": 400, "1": 390, "2": -2})),
        # Retention deleted offsets 100-149 of partition 0 before they were counted: start at 150, and say so.
        (_stored({0: 100, 1: 390, 2: 410}), TopicState("id-1", {0: (150, 500), 1: (0, 480), 2: (0, 510)}),
         NO_CHECKPOINT, ("store offsets", {"0": 150, "1": 390, "2": 410})),
        # The checkpoint resumes (Spark ignores startingOffsets then), also when it is behind the store.
        (_stored({0: 400, 1: 390, 2: 410}), TOPIC_NOW, CheckpointState(True, {0: 400, 1: 390, 2: 410}),
         ("checkpoint", "earliest")),
        (_stored({0: 400, 1: 390, 2: 410}), TOPIC_NOW, CheckpointState(True, {0: 300, 1: 390, 2: 410}),
         ("checkpoint", "earliest")),
        # A store from before offsets were recorded keeps working with its checkpoint.
        (_stored(windows=True), TOPIC_NOW, CheckpointState(True, {0: 400, 1: 390, 2: 410}), ("checkpoint", "earliest")),
        # Refused: the store has counted further than the topic reaches.
        (_stored({0: 400, 1: 390, 2: 600}), TOPIC_NOW, NO_CHECKPOINT, r"counted partition 2 up to offset 600.*ends at 510"),
        # Refused: the topic was deleted and created again (a new id), even where offsets would fit.
        (_stored({0: 400, 1: 390, 2: 410}), TopicState("id-2", TOPIC_NOW.offsets), NO_CHECKPOINT,
         r"deleted and created again.*id-1.*id-2.*new store \(DUCKDB_PATH\)"),
        # Refused: partitions the topic does not have (Kafka never removes partitions).
        (_stored({0: 400, 1: 390, 2: 410}), TopicState("id-1", {0: (0, 500)}), NO_CHECKPOINT,
         r"partitions \[1, 2\], which the topic does not have"),
        # Refused: the topic is gone.
        (_stored({0: 400}), None, NO_CHECKPOINT, r"no such topic"),
        # Refused: the checkpoint consumed more than the store counted (store replaced or restored).
        (_stored({0: 400, 1: 390, 2: 410}), TOPIC_NOW, CheckpointState(True, {0: 450, 1: 390, 2: 410}),
         r"consumed partition 0 up to offset 450.*only up to 400.*Delete the checkpoint folder"),
        # Refused: an empty store behind a checkpoint that consumed events still in the topic.
        (_stored(), TOPIC_NOW, CheckpointState(True, {0: 100, 1: 0, 2: 0}), r"store is empty.*100 events"),
        # Refused: windows of unknown origin and no checkpoint; reading from the start could count them twice.
        (_stored(windows=True), TOPIC_NOW, NO_CHECKPOINT, r"no record of counting this topic.*Restore the checkpoint"),
    ],
)
def test_where_a_stream_starts(stored, now, checkpoint, expected):
    if isinstance(expected, str):
        with pytest.raises(OffsetsMismatchError, match=expected):
            plan_start("raw", "store.duckdb", "checkpoints/stream", stored, now, checkpoint)
        return
    plan = plan_start("raw", "store.duckdb", "checkpoints/stream", stored, now, checkpoint)
    started_from, offsets = expected
    assert plan.started_from == started_from
    assert plan.starting_offsets == (offsets if offsets == "earliest" else json.dumps({"raw": offsets}))
    if stored.offsets.get(0) == 100:
        assert plan.notes == ["partition 0 of raw: offsets 100 to 149 (50 events) were deleted by Kafka's "
                              "retention before the stream counted them"]
