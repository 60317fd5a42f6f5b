"""The lab's monitoring checks: is the pipeline up, keeping up, fresh and clean?

    broker            the Kafka brokers answer and the raw events topic exists
    stream_lag        events in raw_events the stream has not committed yet (Kafka end offsets minus
                      the offsets of the last batch in Spark's checkpoint, summed over partitions)
    freshness         seconds between now and the newest event time the stream has seen
    dead_letters      dead letters / (events + dead letters) of the stream batches of the last hour
    detector          seconds since the detector last finished a run (its heartbeat)
    narrator          seconds since the narrator last finished a pass (its heartbeat)
    narrator_backend  the configured narrator backend answers (the model loads and generates)

`run_checks` never raises: a check that breaks is reported as failed, with the error's first line.
`record` keeps a run's results in `health_checks`; `assert_healthy` raises `HealthCheckFailed`,
which is what fails a scheduled monitoring task.

Heartbeats: each stage writes DATA_DIR/heartbeats/<stage>.json when it finishes a run (`beat`),
and, from `obslab detect|narrate`, when a run fails (ok=False, the error); each write keeps the
other outcome's newest time and detail, so `obslab status` shows the last success and last error.
A file rather than a table, because the detector and the narrator run in their own processes and
should not take the store's write lock only to say they are alive.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from obslab.errors import HealthCheckFailed, ObslabError, StreamError
from obslab.settings import Settings

CHECK_NAMES = ("broker", "stream_lag", "freshness", "dead_letters", "detector", "narrator", "narrator_backend")
BROKER_TIMEOUT_S = 5.0  # a stopped broker fails the check after this, not after the client's 30 s
DEAD_LETTER_PERIOD = timedelta(hours=1)

# check name -> the setting that bounds it
_BOUNDS = {"stream_lag": "health_max_lag_events", "freshness": "health_max_freshness_seconds",
           "dead_letters": "health_max_dead_letter_rate", "detector": "health_max_stage_age_seconds",
           "narrator": "health_max_stage_age_seconds"}

# check name -> (heartbeat stage, how to run it)
_STAGES = {
    "detector": ("detect", "start the detector (`obslab detect`, or `obslab detect --once` from a schedule; "
                           "notebook 03 and the pipeline DAG run it too)"),
    "narrator": ("narrate", "start the narrator (`obslab narrate`, or `obslab narrate --once` from a schedule; "
                            "notebook 04 and the pipeline DAG run it too)"),
}


@dataclass(frozen=True)
class Check:
    """One check's result: what was measured, the bound it was held to, and what it means."""

    name: str
    ok: bool
    value: float | None
    bound: float | None
    message: str


@dataclass(frozen=True)
class Beat:
    """A stage's last heartbeat."""

    stage: str
    at: datetime
    ok: bool
    detail: str
    # The newest run of the other outcome, kept so a failure does not hide when the stage last worked.
    last_ok_at: datetime | None = None
    last_ok_detail: str = ""
    last_error_at: datetime | None = None
    last_error: str = ""


# ---------------------------------------------------------------------- heartbeats


def heartbeat_path(settings: Settings, stage: str) -> Path:
    """DATA_DIR/heartbeats/<stage>.json"""
    return settings.data_dir / "heartbeats" / f"{stage}.json"


def beat(settings: Settings, stage: str, ok: bool = True, detail: str = "") -> Beat:
    """Record that `stage` finished a run now (or failed one: ok=False, detail: the error), written atomically."""
    now = datetime.now(timezone.utc)
    try:
        before = last_beat(settings, stage)
    except ObslabError:
        before = None  # an unreadable file is replaced whole
    last_ok = (now, detail) if ok else (before.last_ok_at, before.last_ok_detail) if before else (None, "")
    last_error = (before.last_error_at, before.last_error) if before else (None, "")
    record = Beat(stage, now, ok, detail, *last_ok, *(last_error if ok else (now, detail)))
    path = heartbeat_path(settings, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{stage}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"stage": stage, "at": record.at.isoformat(), "ok": ok, "detail": detail,
                       "last_ok_at": _iso(record.last_ok_at), "last_ok_detail": record.last_ok_detail,
                       "last_error_at": _iso(record.last_error_at), "last_error": record.last_error}, out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return record


def last_beat(settings: Settings, stage: str) -> Beat | None:
    """The stage's newest heartbeat, or None when it never finished a run here."""
    path = heartbeat_path(settings, stage)
    try:
        data = json.loads(path.read_text())
        at, ok, detail = datetime.fromisoformat(data["at"]), bool(data["ok"]), data.get("detail", "")
        # A file written before last_ok_at existed: its own run is the last success, if it was one.
        last_ok_at = _time(data["last_ok_at"]) if "last_ok_at" in data else at if ok else None
        return Beat(data["stage"], at, ok, detail, last_ok_at, data.get("last_ok_detail", detail if ok else ""),
                    _time(data.get("last_error_at")), data.get("last_error", ""))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ObslabError(f"heartbeat {path} is unreadable ({type(err).__name__}: {err}); delete it: the "
                          f"{stage} stage writes it again at the end of its next run") from None


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# ---------------------------------------------------------------------- offsets


def raw_topic_offsets(settings: Settings, timeout_s: float = BROKER_TIMEOUT_S) -> dict[int, tuple[int, int]] | None:
    """partition -> (first offset, end offset) of the topic the stream counts (STREAM_SOURCE); None when it does not exist."""
    from kafka import TopicPartition

    from obslab.broker import consumer

    ms = int(timeout_s * 1000)
    c = consumer(settings, bootstrap_timeout_ms=ms, request_timeout_ms=ms, client_id="obslab-health")
    try:
        topic = settings.stream_topic
        if topic not in c.topics():
            return None
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        first, end = c.beginning_offsets(parts), c.end_offsets(parts)
        return {tp.partition: (first[tp], end[tp]) for tp in parts}
    finally:
        c.close()


def counted_offsets(settings: Settings, store) -> dict[int, int] | None:
    """partition -> first offset the store has not counted (`stream_offsets`, moved in the same
    transaction as the data); the checkpoint's committed offsets for a store that has none yet."""
    from obslab.stream.start import store_position

    if store.schema_version() >= 6:  # the version that added stream_offsets
        offsets = store_position(store, settings.stream_topic).offsets
        if offsets:
            return offsets
    return committed_offsets(settings)


def committed_offsets(settings: Settings) -> dict[int, int] | None:
    """partition -> next offset to read, as of the stream's last committed batch; None before the first.

    Spark's checkpoint keeps, per batch N, `offsets/N` (written when the batch is planned: "v1", a JSON
    line of batch metadata, then one JSON line per source, {"<topic>": {"<partition>": <end offset>}})
    and `commits/N` (written once the sink has applied the batch). So the newest N under commits/ is
    the last batch in the store, and offsets/N holds where it ended.
    """
    from obslab.stream.start import checkpoint_path

    spark_dir = checkpoint_path(settings) / "spark"
    batches = [int(p.name) for p in (spark_dir / "commits").glob("*") if p.name.isdigit()]
    if not batches:
        return None
    offsets_file = spark_dir / "offsets" / str(max(batches))
    lines = offsets_file.read_text().splitlines()
    if not lines or lines[0] != "v1":
        raise StreamError(f"{offsets_file} is not a Spark offset log this check can read (first line "
                          f"{lines[0] if lines else 'missing'!r}, expected 'v1'); if Spark was upgraded, "
                          "update obslab.health.committed_offsets")
    topic = settings.stream_topic
    for line in lines[2:]:
        source = json.loads(line)
        if isinstance(source, dict) and topic in source:
            return {int(p): int(o) for p, o in source[topic].items()}
    raise StreamError(f"{offsets_file} holds no offsets of topic {topic}: the checkpoint belongs to another "
                      "topic; set TOPIC_RAW_EVENTS or CHECKPOINT_NAME to the stream you monitor")


# ---------------------------------------------------------------------- the checks


def run_checks(settings: Settings, store, now: datetime | None = None) -> list[Check]:
    """Every monitoring check, in a fixed order; a check that breaks is reported as failed, never raised."""
    now = now or datetime.now(timezone.utc)
    started = time.monotonic()
    try:
        offsets: dict | None | Exception = raw_topic_offsets(settings)
    except Exception as err:  # noqa: BLE001 - reported by the broker and lag checks
        offsets = err
    answered_s = time.monotonic() - started
    return [
        _safely("broker", settings, _broker, settings, offsets, answered_s),
        _safely("stream_lag", settings, _stream_lag, settings, store, offsets),
        _safely("freshness", settings, _freshness, settings, store, now),
        _safely("dead_letters", settings, _dead_letters, settings, store, now),
        _safely("detector", settings, _stage_age, "detector", settings, now),
        _safely("narrator", settings, _stage_age, "narrator", settings, now),
        _safely("narrator_backend", settings, _narrator_backend, settings),
    ]


def _safely(name: str, s: Settings, check, *args) -> Check:
    try:
        return check(*args)
    except Exception as err:  # noqa: BLE001 - one broken check must not hide the others
        setting = _BOUNDS.get(name)
        bound = getattr(s, setting) if setting else None
        against = f"; bound {setting.upper()}={bound:g}" if setting else ""
        return Check(name, False, None, bound, f"{name}: could not be measured, the check itself failed "
                                               f"({_first_line(err)}{against}): fix that and run `obslab health` again")


def _broker(s: Settings, offsets, answered_s: float) -> Check:
    where = s.kafka_bootstrap_servers
    if isinstance(offsets, Exception):
        return Check("broker", False, None, BROKER_TIMEOUT_S,
                     f"broker: no answer from {where} within {BROKER_TIMEOUT_S:g} s ({_first_line(offsets)}): "
                     "start the broker (`obslab broker start`) or point KAFKA_BOOTSTRAP_SERVERS at running brokers")
    if offsets is None:
        return Check("broker", False, round(answered_s, 3), BROKER_TIMEOUT_S,
                     f"broker: {where} answers, but topic {s.stream_topic} does not exist: `obslab broker "
                     "start` creates the lab topics (or set TOPIC_RAW_EVENTS to the topic the generator uses)")
    return Check("broker", True, round(answered_s, 3), BROKER_TIMEOUT_S,
                 f"{where} answered in {answered_s:.2f} s; {s.stream_topic} has {len(offsets)} partitions")


def _stream_lag(s: Settings, store, offsets) -> Check:
    bound = s.health_max_lag_events
    if isinstance(offsets, Exception) or offsets is None:
        why = "the brokers do not answer" if isinstance(offsets, Exception) else f"{s.stream_topic} does not exist"
        return Check("stream_lag", False, None, bound,
                     f"stream_lag: could not be measured because {why} (bound HEALTH_MAX_LAG_EVENTS={bound:,}): "
                     "fix the broker check first")
    committed = counted_offsets(s, store)
    # A partition the stream never read starts at the topic's first offset; events that retention
    # deleted before the stream read them are lost, not lag, hence max(committed, first). A topic
    # deleted and created again can end before the committed offset: nothing to read there, lag 0.
    lag = sum(max(0, end - max((committed or {}).get(p, first), first)) for p, (first, end) in offsets.items())
    since = "since its last committed batch" if committed is not None else "(no committed batch yet: all of it)"
    if lag <= bound:
        return Check("stream_lag", True, float(lag), bound,
                     f"{lag:,} events in {s.stream_topic} not yet in the store {since}")
    return Check("stream_lag", False, float(lag), bound,
                 f"stream_lag: the stream is {lag:,} events behind {s.stream_topic} {since}, over the bound "
                 f"HEALTH_MAX_LAG_EVENTS={bound:,}: start the stream (`obslab stream`) or run it once "
                 "(`obslab stream --available-now`); if it runs and still falls behind, give Spark more cores "
                 "(SPARK_MASTER) or generate less")


def _freshness(s: Settings, store, now: datetime) -> Check:
    bound = s.health_max_freshness_seconds
    newest = None
    if store.path.exists():
        with store.reader() as con:
            newest = con.execute("SELECT coalesce((SELECT max(max_event_time) FROM stream_state), "
                                 "(SELECT max(window_end) FROM service_metrics))").fetchone()[0]
    if newest is None:
        return Check("freshness", False, None, bound,
                     f"freshness: no events in the store yet (bound HEALTH_MAX_FRESHNESS_SECONDS={bound:g} s): "
                     "start the generator and the stream (or run the pipeline DAG with generate_seconds > 0)")
    newest = newest.astimezone(timezone.utc)
    age = (now - newest).total_seconds()
    if age <= bound:
        return Check("freshness", True, age, bound, f"newest event {newest:%Y-%m-%d %H:%M:%S}Z is {age:,.0f} s old")
    return Check("freshness", False, age, bound,
                 f"freshness: the newest event the stream has seen ({newest:%Y-%m-%d %H:%M:%S}Z) is {age:,.0f} s "
                 f"old, over the bound HEALTH_MAX_FRESHNESS_SECONDS={bound:g} s: check that the generator still "
                 "publishes (`obslab broker status` shows growing offsets) and that the stream runs "
                 "(`obslab stream`, or the pipeline DAG)")


def _dead_letters(s: Settings, store, now: datetime) -> Check:
    bound = s.health_max_dead_letter_rate
    batches = events = dead = 0
    if store.path.exists():
        with store.reader() as con:
            batches, events, dead = con.execute(
                "SELECT count(*), coalesce(sum(events), 0), coalesce(sum(dead_letters), 0) FROM stream_batches "
                "WHERE applied_at > ?", [now - DEAD_LETTER_PERIOD]).fetchone()
    if batches == 0:
        return Check("dead_letters", True, 0.0, bound,
                     "no stream batch in the last hour, so nothing to rate (a silent stream fails freshness)")
    rate = dead / (events + dead) if events + dead else 0.0
    counts = f"{dead:,} of {events + dead:,} events in {batches:,} batch(es) of the last hour"
    if rate <= bound:
        return Check("dead_letters", True, rate, bound, f"{rate:.2%} dead letters ({counts})")
    return Check("dead_letters", False, rate, bound,
                 f"dead_letters: {rate:.2%} of the events were set aside ({counts}), over the bound "
                 f"HEALTH_MAX_DEAD_LETTER_RATE={bound:g}: see their reasons in dead_letter_events (notebook 02) "
                 "and fix the producer; many `late` ones mean WATERMARK_SECONDS is shorter than the delays")


def _stage_age(name: str, s: Settings, now: datetime) -> Check:
    stage, how = _STAGES[name]
    bound = s.health_max_stage_age_seconds
    last = last_beat(s, stage)
    if last is None:
        return Check(name, False, None, bound,
                     f"{name}: it has never finished a run here (no {heartbeat_path(s, stage)}; bound "
                     f"HEALTH_MAX_STAGE_AGE_SECONDS={bound:g} s): {how}")
    age = (now - last.at).total_seconds()
    if not last.ok:
        return Check(name, False, age, bound,
                     f"{name}: its last run, {age:,.0f} s ago, reported a failure ({last.detail}): see its log, "
                     f"fix the cause, then {how}")
    if age <= bound:
        return Check(name, True, age, bound, f"last run finished {age:,.0f} s ago ({last.detail})")
    return Check(name, False, age, bound,
                 f"{name}: its last run finished {age:,.0f} s ago ({last.at:%Y-%m-%d %H:%M:%S}Z), over the bound "
                 f"HEALTH_MAX_STAGE_AGE_SECONDS={bound:g} s: {how}")


def _narrator_backend(s: Settings) -> Check:
    from obslab.narrate.backends import make_backend

    backend, why = make_backend(s)
    if backend.name == "template":
        return Check("narrator_backend", True, None, None, f"{why}: rules, nothing to load")
    if backend.name == "ollama":
        ok, problem = backend.available()
        if ok:
            return Check("narrator_backend", True, None, None, f"{why}: answers with model {backend.model}")
        return Check("narrator_backend", False, None, None,
                     f"narrator_backend: ollama is not usable ({problem}; chosen as {why}): start Ollama "
                     "(`ollama serve`) and pull the model, or set NARRATOR_BACKEND=llamacpp or template")
    try:
        seconds = backend.warm_up()
    except Exception as err:  # noqa: BLE001 - a model that does not load is the finding
        return Check("narrator_backend", False, None, None,
                     f"narrator_backend: {backend.name} does not generate ({_first_line(err)}; chosen as {why}): "
                     "fix that (`make setup` builds llama-cpp-python and the model), or set NARRATOR_BACKEND=template")
    return Check("narrator_backend", True, round(seconds, 2), None,
                 f"{why}: model loaded and generated in {seconds:.1f} s")


def _first_line(err: BaseException) -> str:
    name, text = type(err).__name__, str(err).strip()
    if not text:
        return name
    line = text.splitlines()[0][:300]
    return line if line.startswith(name) else f"{name}: {line}"  # some clients name the class themselves


# ---------------------------------------------------------------------- results


def new_run_id(now: datetime) -> str:
    """An id for one monitoring run, e.g. health-20261128T081500.123Z."""
    return f"health-{now.astimezone(timezone.utc):%Y%m%dT%H%M%S.%f}"[:-3] + "Z"


def record(store, run_id: str, checks: list[Check], now: datetime) -> int:
    """Write one run's checks to health_checks (a re-run of the same run id replaces its rows)."""
    return store.upsert("health_checks", [
        {"run_id": run_id, "check_name": c.name, "ok": c.ok, "value": _float(c.value), "bound": _float(c.bound),
         "message": c.message, "checked_at": now} for c in checks])


def _float(x) -> float | None:
    return None if x is None else float(x)


def number(x: float | None) -> str:
    """A check's value or bound for people: whole numbers with separators, else 4 significant digits."""
    return "-" if x is None else f"{int(x):,}" if float(x).is_integer() else f"{x:.4g}"


def assert_healthy(checks: list[Check]) -> None:
    """Raise HealthCheckFailed listing every failed check; return quietly when all passed."""
    failed = [c for c in checks if not c.ok]
    if failed:
        raise HealthCheckFailed(failed)
