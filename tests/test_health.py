"""The monitoring checks against a real broker, Spark stream and DuckDB store: a healthy lab passes
every check, and each planted fault fails its check with a message that says what to do."""

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import papermill
import pytest
from typer.testing import CliRunner

from conftest import free_port
from obslab import views
from obslab.cli import app
from obslab.detect.run import run_detection
from obslab.errors import HealthCheckFailed
from obslab.generator.run import RunPlan, generate
from obslab.health import (CHECK_NAMES, Check, assert_healthy, beat, heartbeat_path, last_beat, new_run_id, record,
                           run_checks)
from obslab.lab import Lab
from obslab.narrate.backends import TemplateBackend
from obslab.narrate.run import narrate_pending
from obslab.settings import Settings
from obslab.store import Store
from obslab.stream.job import run_stream_job
from tests.stream.helpers import event_lines, lab_for, publish

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "07_monitoring.ipynb"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def stream_once(settings, spark, store):
    return run_stream_job(settings, available_now=True, spark=spark, store=store)


@pytest.fixture(scope="module")
def healthy(spark, broker, lab_settings, tmp_path_factory):
    """A lab that did everything once: a minute of traffic ending now, streamed, detected, narrated."""
    settings = lab_for(lab_settings, tmp_path_factory.mktemp("healthy"), narrator_backend="template",
                       scenario="clean")
    lab = Lab(settings)
    store = lab.store
    with lab:
        report, _ = generate(RunPlan(max_rate=True, duration_s=60, start=datetime.now(timezone.utc) - timedelta(seconds=60)),
                             settings, store=store, sink=lab.events)
    assert report.events_acked > 0
    streamed = stream_once(settings, spark, store)
    assert streamed.counters.events == report.events_acked
    run_detection(store, settings)
    narrate_pending(store, TemplateBackend(), settings)
    return settings, store


@pytest.fixture()
def empty_lab(broker, lab_settings, tmp_path):
    """Settings of a lab with its own (empty) topic and data dir on the shared broker."""
    return lab_for(lab_settings, tmp_path, narrator_backend="template")


# ---------------------------------------------------------------------- a healthy lab

@pytest.mark.kafka
@pytest.mark.spark
def test_a_healthy_lab_passes_every_check_and_the_run_is_recorded(healthy):
    settings, store = healthy
    now = datetime.now(timezone.utc)
    checks = run_checks(settings, store, now)
    assert [c.name for c in checks] == list(CHECK_NAMES)  # one each, in the documented order
    assert all(c.ok for c in checks), [c.message for c in checks if not c.ok]
    got = by_name(checks)
    assert got["stream_lag"].value == 0  # the stream read everything published
    assert got["dead_letters"].value == 0  # the generator only writes valid events
    assert got["freshness"].value >= 0  # the traffic ended before the check
    assert got["detector"].bound == settings.health_max_stage_age_seconds
    assert_healthy(checks)  # quietly

    run_id = new_run_id(now)
    assert record(store, run_id, checks, now) == len(CHECK_NAMES)
    shown = views.health_checks(store)
    assert list(shown.check_name) == list(CHECK_NAMES) and shown.ok.all() and set(shown.run_id) == {run_id}


def test_the_view_shows_the_newest_run_failed_checks_first(tmp_path):
    store = Store(tmp_path / "views.duckdb")
    store.migrate()  # what a Lab's store is; record() writes to a current store
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    ok = [Check(name, True, 1.0, 2.0, "fine") for name in CHECK_NAMES]
    record(store, "old", ok, t0)
    newer = [Check(c.name, c.name != "freshness", c.value, c.bound, c.message) for c in ok]
    record(store, "new", newer, t0 + timedelta(minutes=5))
    shown = views.health_checks(store)
    assert set(shown.run_id) == {"new"}
    assert list(shown.check_name) == ["freshness", *(n for n in CHECK_NAMES if n != "freshness")]
    record(store, "new", ok, t0 + timedelta(minutes=5))  # a re-run of the same run id replaces its rows
    assert store.count("health_checks") == 2 * len(CHECK_NAMES)


# ---------------------------------------------------------------------- planted faults

@pytest.mark.kafka
def test_a_stopped_broker_fails_the_broker_check_naming_the_address(lab_settings, tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = lab_settings.model_copy(update={"kafka_bootstrap_servers": address, "data_dir": tmp_path,
                                               "duckdb_path": tmp_path / "observability.duckdb",
                                               "narrator_backend": "template"})
    got = by_name(run_checks(settings, Store.from_settings(settings)))
    assert not got["broker"].ok and got["broker"].value is None
    assert address in got["broker"].message and "obslab broker start" in got["broker"].message
    assert not got["stream_lag"].ok and got["stream_lag"].value is None  # cannot be measured without the broker
    assert "could not be measured" in got["stream_lag"].message


@pytest.mark.kafka
def test_a_missing_topic_fails_the_broker_check(empty_lab):
    settings = empty_lab.model_copy(update={"topic_raw_events": "no_such_topic"})
    broker_check = by_name(run_checks(settings, Store.from_settings(settings)))["broker"]
    assert not broker_check.ok and "no_such_topic does not exist" in broker_check.message


@pytest.mark.kafka
@pytest.mark.spark
def test_lag_is_the_number_of_events_the_stream_has_not_committed(empty_lab, spark):
    settings = empty_lab.model_copy(update={"health_max_lag_events": 0})
    store = Lab(settings).store
    lines = event_lines("clean", seconds=60)

    def lag() -> Check:
        return by_name(run_checks(settings, store))["stream_lag"]

    publish(settings, lines[:25])
    assert lag().value == 25 and "no committed batch yet" in lag().message  # no checkpoint: all of it
    stream_once(settings, spark, store)
    assert lag().value == 0 and lag().ok
    publish(settings, lines[25:32])  # 7 events after the stream ran
    behind = lag()
    assert (behind.value, behind.bound, behind.ok) == (7, 0, False)
    for part in ("stream_lag", "7 events behind", "HEALTH_MAX_LAG_EVENTS=0", "obslab stream"):
        assert part in behind.message
    at_bound = settings.model_copy(update={"health_max_lag_events": 7})
    assert by_name(run_checks(at_bound, store))["stream_lag"].ok  # the bound itself is allowed
    # the store, not the checkpoint, knows what was counted: a lost checkpoint is no lag
    shutil.rmtree(settings.checkpoints_dir / settings.checkpoint_name)
    assert lag().value == 7


@pytest.mark.kafka
@pytest.mark.spark
def test_malformed_events_fail_the_dead_letter_check_with_the_exact_rate(empty_lab, spark):
    store = Lab(empty_lab).store
    publish(empty_lab, event_lines("clean", seconds=60)[:90] + ["{broken"] * 10)
    assert stream_once(empty_lab, spark, store).counters.dead_letters == 10
    dead = by_name(run_checks(empty_lab, store))["dead_letters"]
    assert (dead.value, dead.bound, dead.ok) == (0.1, 0.01, False)  # 10 of 100
    for part in ("dead_letters", "10.00%", "10 of 100", "HEALTH_MAX_DEAD_LETTER_RATE=0.01", "dead_letter_events"):
        assert part in dead.message
    # An hour without batches is not a dead-letter problem (freshness reports the silence).
    later = by_name(run_checks(empty_lab, store, datetime.now(timezone.utc) + timedelta(hours=2)))
    assert later["dead_letters"].ok and later["dead_letters"].value == 0
    assert "no stream batch in the last hour" in later["dead_letters"].message
    assert not later["freshness"].ok


@pytest.mark.kafka
@pytest.mark.spark
def test_old_data_fails_freshness_with_its_age(healthy):
    settings, store = healthy
    newest = store.query("SELECT max(max_event_time) FROM stream_state")[0][0]
    now = newest + timedelta(seconds=settings.health_max_freshness_seconds + 61)
    fresh = by_name(run_checks(settings, store, now))["freshness"]
    assert (fresh.value, fresh.ok) == (settings.health_max_freshness_seconds + 61, False)
    for part in ("freshness", "661 s old", "HEALTH_MAX_FRESHNESS_SECONDS=600", "generator"):
        assert part in fresh.message


@pytest.mark.kafka
def test_an_empty_store_fails_freshness_and_says_how_to_get_events(empty_lab):
    fresh = by_name(run_checks(empty_lab, Store.from_settings(empty_lab)))["freshness"]
    assert not fresh.ok and fresh.value is None
    assert fresh.message == ("freshness: no events in the store yet (bound HEALTH_MAX_FRESHNESS_SECONDS=600 s): "
                             "start the generator and the stream (or run the pipeline DAG with generate_seconds > 0)")


@pytest.mark.kafka
@pytest.mark.spark
def test_a_beat_older_than_the_bound_fails_its_stage(healthy):
    settings, store = healthy
    settings = settings.model_copy(update={"health_max_stage_age_seconds": 60.0})
    detected = last_beat(settings, "detect")
    assert detected is not None and detected.ok  # run_detection wrote it
    assert "windows" in detected.detail
    got = by_name(run_checks(settings, store, detected.at + timedelta(seconds=100)))
    assert (got["detector"].value, got["detector"].bound, got["detector"].ok) == (100, 60, False)
    for part in ("detector", "100 s ago", "HEALTH_MAX_STAGE_AGE_SECONDS=60", "obslab detect"):
        assert part in got["detector"].message
    narrated = last_beat(settings, "narrate")  # narrate_pending wrote it, after the detector's
    assert narrated is not None and narrated.at >= detected.at
    assert got["narrator"].value == (detected.at + timedelta(seconds=100) - narrated.at).total_seconds()


@pytest.mark.kafka
def test_stages_that_never_ran_or_failed_say_what_to_start(empty_lab):
    got = by_name(run_checks(empty_lab, Store.from_settings(empty_lab)))
    assert not got["detector"].ok and "never finished a run" in got["detector"].message
    assert "obslab detect" in got["detector"].message and "obslab narrate" in got["narrator"].message
    beat(empty_lab, "narrate", ok=False, detail="the model crashed")
    failed = by_name(run_checks(empty_lab, Store.from_settings(empty_lab)))["narrator"]
    assert not failed.ok and "reported a failure (the model crashed)" in failed.message


@pytest.mark.kafka
def test_a_check_that_breaks_is_a_failed_check_not_a_crash(empty_lab):
    path = heartbeat_path(empty_lab, "detect")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    checks = run_checks(empty_lab, Store.from_settings(empty_lab))
    assert [c.name for c in checks] == list(CHECK_NAMES)  # every other check still ran
    detector = by_name(checks)["detector"]
    assert not detector.ok and detector.value is None and detector.bound == empty_lab.health_max_stage_age_seconds
    assert detector.message.startswith("detector: could not be measured, the check itself failed (ObslabError: "
                                       f"heartbeat {path} is unreadable")
    assert "delete it" in detector.message and "HEALTH_MAX_STAGE_AGE_SECONDS=900" in detector.message


def test_a_heartbeat_is_replaced_whole_and_read_back(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert last_beat(settings, "detect") is None
    first = beat(settings, "detect", detail="one")
    second = beat(settings, "detect", detail="two")
    assert last_beat(settings, "detect") == second and second.at >= first.at
    assert [p.name for p in heartbeat_path(settings, "detect").parent.iterdir()] == ["detect.json"]  # no temp file left


# ---------------------------------------------------------------------- the narrator's backend

@pytest.mark.kafka
@pytest.mark.parametrize("overrides, words", [
    # the embedded backend without its model file: names it and what to run
    ({"narrator_backend": "llamacpp", "llm_model_path": Path("/nonexistent/model.gguf")},
     ["narrator_backend: llamacpp", "/nonexistent/model.gguf", "make setup", "NARRATOR_BACKEND=template"]),
    # an Ollama server that is not there
    ({"narrator_backend": "ollama", "ollama_host": "http://127.0.0.1:{port}"},
     ["narrator_backend: ollama", "does not answer", "ollama serve", "NARRATOR_BACKEND=llamacpp or template"]),
])
def test_a_backend_that_does_not_answer_fails_its_check(empty_lab, overrides, words):
    port = free_port()
    overrides = {k: v.format(port=port) if isinstance(v, str) else v for k, v in overrides.items()}
    settings = empty_lab.model_copy(update=overrides)
    check = by_name(run_checks(settings, Store.from_settings(settings)))["narrator_backend"]
    assert not check.ok
    for word in words:
        assert word in check.message


@pytest.mark.kafka
def test_the_embedded_model_loads_and_generates(empty_lab):
    settings = empty_lab.model_copy(update={"narrator_backend": "llamacpp"})
    check = by_name(run_checks(settings, Store.from_settings(settings)))["narrator_backend"]
    assert check.ok and check.value > 0 and "model loaded and generated" in check.message, check.message


# ---------------------------------------------------------------------- the verdict

@pytest.mark.parametrize("failed, first_line", [
    ([], None),  # all passed: no error
    ([Check("stream_lag", False, 7.0, 0, "stream_lag: 7 behind; start the stream")],
     "1 health check(s) failed: stream_lag 7 (bound 0)"),
    ([Check("freshness", False, None, 600.0, "freshness: no events; start the generator"),
      Check("dead_letters", False, 0.1, 0.01, "dead_letters: 10%; fix the producer")],
     "2 health check(s) failed: freshness n/a (bound 600), dead_letters 0.1 (bound 0.01)"),
])
def test_assert_healthy_lists_every_failed_check(failed, first_line):
    checks = [Check("broker", True, 0.01, 5.0, "fine"), *failed]
    if first_line is None:
        assert_healthy(checks)
        return
    with pytest.raises(HealthCheckFailed) as info:
        assert_healthy(checks)
    text = str(info.value)
    assert text.splitlines()[0] == first_line
    assert all(c.message in text for c in failed) and "fine" not in text
    assert info.value.failed == failed


# ---------------------------------------------------------------------- CLI and notebook

def _env_of(monkeypatch, settings) -> None:
    for name in ("data_dir", "kafka_bootstrap_servers", "topic_raw_events", "narrator_backend"):
        monkeypatch.setenv(name.upper(), str(getattr(settings, name)))
    monkeypatch.delenv("DUCKDB_PATH", raising=False)


@pytest.mark.kafka
@pytest.mark.spark
def test_cli_exits_0_when_healthy_and_records_the_run(healthy, monkeypatch):
    settings, store = healthy
    _env_of(monkeypatch, settings)
    result = CliRunner().invoke(app, ["health", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ok"] and [c["name"] for c in out["checks"]] == list(CHECK_NAMES)
    assert store.query("SELECT count(*), bool_and(ok) FROM health_checks WHERE run_id = ?", [out["run_id"]])[0] == \
        (len(CHECK_NAMES), True)


@pytest.mark.kafka
def test_cli_exits_1_when_a_check_fails_and_says_which(empty_lab, monkeypatch):
    _env_of(monkeypatch, empty_lab)
    monkeypatch.setenv("HEALTH_MAX_LAG_EVENTS", "0")
    publish(empty_lab, event_lines("clean", seconds=10)[:3])
    result = CliRunner().invoke(app, ["health", "--no-record"])
    assert result.exit_code == 1, result.output
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith(("ok", "FAIL"))}
    assert lines["stream_lag"].split()[:4] == ["FAIL", "stream_lag", "3", "0"]  # value 3, bound 0 (from the env)
    assert lines["broker"].startswith("ok") and lines["freshness"].startswith("FAIL")
    assert not Path(empty_lab.duckdb_path).exists()  # --no-record wrote nothing


def test_the_notebook_parameters_are_settings_with_their_defaults():
    declared = papermill.inspect_notebook(str(NOTEBOOK))
    assert set(declared) == {"health_max_lag_events", "health_max_freshness_seconds", "health_max_dead_letter_rate",
                             "health_max_stage_age_seconds"}
    for name, p in declared.items():
        field = Settings.model_fields[name]
        assert p["help"] and p["inferred_type_name"] == field.annotation.__name__
        assert float(p["default"]) == field.default  # the notebook runs with the settings' defaults
