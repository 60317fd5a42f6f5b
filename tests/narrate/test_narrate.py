"""The narrator on real incidents: the shipped scenarios' evaluation stores (generator -> the
stream's transform and sink -> detection), narrated by the template and by the embedded model."""

import json
import shutil
import statistics

import pytest

from obslab.narrate.backends import LlamaCppBackend, TemplateBackend, make_backend
from obslab.narrate.facts import build_facts
from obslab.narrate.grounding import problems
from obslab.narrate.run import narrate_pending, pending_incidents
from obslab.store import Store

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _copy(evaluation, tmp_path) -> Store:
    path = tmp_path / f"{evaluation.scenario}.duckdb"
    shutil.copy(evaluation.store_path, path)
    store = Store(path)
    store.migrate()
    return store


def test_facts_come_from_the_store(evaluated, tmp_path):
    store = _copy(evaluated("mixed"), tmp_path)
    ids = {i.incident_id.split(":20")[0] + "@" + i.opened_at.strftime("%H:%M"): i.incident_id
           for i in evaluated("mixed").incidents}
    outage = build_facts(store, ids["payments:errors@09:17"], 60)  # endpoint_outage of /api/refund: 503s
    assert outage["service"] == "payments" and outage["kind"] == "errors" and outage["start"] == "09:17"
    assert outage["top_endpoints"][0]["endpoint"] == "/api/refund"
    assert outage["status_codes"][0]["code"] == 503
    assert outage["error_rate_pct"] > 3 * outage["before"]["error_rate_pct"]
    # The fault ran 09:17:13-09:20:13, so the incident's windows are 09:17 to 09:20 or 09:21.
    opened, last = store.query("SELECT opened_at, last_anomaly_at FROM incidents WHERE incident_id = ?",
                               [ids["payments:errors@09:17"]])[0]
    assert opened.strftime("%H:%M") == "09:17" and last.strftime("%H:%M") in ("09:20", "09:21")
    raw = store.query("SELECT sum(request_count), sum(error_count) FROM service_metrics WHERE service = 'payments' "
                      "AND window_start >= ? AND window_start < ?", [opened, last])[0]
    assert outage["requests"] == raw[0] and outage["error_rate_pct"] == round(100 * raw[1] / raw[0], 1)
    slow = build_facts(store, ids["checkout:latency@09:04"], 60)  # latency_spike x6 on checkout
    assert slow["avg_latency_ms"] > 4 * slow["before"]["avg_latency_ms"]
    assert {o["service"]: o["state"] for o in slow["other_services"]}["search"] == "healthy"


def test_the_template_narrates_every_incident_grounded_and_same_facts_are_not_narrated_twice(evaluated, tmp_path):
    for name in ("demo", "workshop", "mixed"):
        store = _copy(evaluated(name), tmp_path)
        done = narrate_pending(store, TemplateBackend(), evaluated.settings)
        assert len(done) == len(evaluated(name).incidents) > 0
        assert all(n.row["grounded"] and n.row["backend"] == "template" for n in done)
        assert pending_incidents(store) == [] and narrate_pending(store, TemplateBackend(), evaluated.settings) == []


def test_the_embedded_model_narrates_the_shipped_incidents_grounded(evaluated, tmp_path, record_property):
    # What is measured is who wrote the text, not how fast: on a busy shared machine a narration can
    # pass the default 30 s timeout and fall back to the template, which would count against the model.
    settings = evaluated.settings.model_copy(update={"narrator_backend": "llamacpp", "narrate_timeout_seconds": 600})
    backend, _ = make_backend(settings)
    assert isinstance(backend, LlamaCppBackend)
    rows = []
    for name in ("demo", "workshop", "mixed"):
        store = _copy(evaluated(name), tmp_path)
        rows += [n.row for n in narrate_pending(store, backend, settings)]
    assert len(rows) == sum(len(evaluated(n).incidents) for n in ("demo", "workshop", "mixed"))
    by_model = [r for r in rows if r["backend"] == "llamacpp"]
    for r in rows:  # whatever was stored passes the check, and says where it came from
        assert r["grounded"] and problems(r["summary"], json.loads(r["facts"])) == []
        assert (r["backend"] == "template") == (r["fallback_reason"] is not None)
    assert all(r["tokens"] > 0 and r["attempts"] >= 1 for r in rows)
    # The model, not the template, wrote most of them.
    assert len(by_model) >= 0.75 * len(rows), [(r["incident_id"], r["fallback_reason"]) for r in rows]
    latencies = [r["latency_ms"] for r in rows]
    record_property("embedded_model_share", f"{len(by_model)}/{len(rows)}")
    record_property("narration_latency_ms_p50", statistics.median(latencies))
    print(f"\nembedded model: {len(by_model)} of {len(rows)} narratives grounded on its own; "
          f"median latency {statistics.median(latencies):.0f} ms")


def test_cli_narrates_once_and_says_which_backend(evaluated, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from obslab.cli import app

    store = _copy(evaluated("demo"), tmp_path)
    monkeypatch.setenv("DUCKDB_PATH", str(store.path))
    monkeypatch.setenv("DATA_DIR", str(tmp_path))  # the narrator's heartbeat goes here, not into the project
    result = CliRunner().invoke(app, ["narrate", "--once", "--backend", "template", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(evaluated("demo").incidents) and all(r["backend"] == "template" for r in rows)
    assert "narrator backend: template: asked for" in result.output
    again = CliRunner().invoke(app, ["narrate", "--once", "--backend", "template", "--json"])
    assert again.exit_code == 0 and not [line for line in again.stdout.splitlines() if line.startswith("{")]
