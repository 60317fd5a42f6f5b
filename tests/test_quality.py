"""Data quality and retention against a real DuckDB file: hand-built rows with known answers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import papermill
import pytest
from typer.testing import CliRunner

from obslab import views
from obslab.cli import app
from obslab.errors import DataQualityError
from obslab.lab import Lab
from obslab.quality import RULES, apply_retention, assert_valid, compact, record, validate
from obslab.settings import Settings, load_settings
from obslab.store import Store

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 1, 8, 12, 0, tzinfo=timezone.utc)
CUTOFF = NOW - timedelta(days=7)  # retention_days = 7
T0 = datetime(2026, 1, 8, 9, 0, tzinfo=timezone.utc)  # the clean data starts here, well inside retention
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


# ------------------------------------------------------------------------- hand-built rows

def window(service, start, requests, errors, endpoint=None, **extra):
    """A 60 s metric window; latencies are fixed and ordered unless overridden."""
    row = {"service": service, "window_start": start, "window_end": start + MINUTE, "request_count": requests,
           "error_count": errors, "error_rate": errors / requests, "avg_latency_ms": 150.0,
           "p50_latency_ms": 140.0, "p95_latency_ms": 190.0, "p99_latency_ms": 230.0, "is_final": True,
           "updated_at": start + 3 * MINUTE}
    if endpoint is not None:
        row |= {"endpoint": endpoint, "latency_sum_ms": 150.0 * requests}
    return row | extra


def incident(incident_id, service, opened, last, status="resolved"):
    return {"incident_id": incident_id, "service": service, "kind": "errors", "status": status,
            "opened_at": opened, "last_anomaly_at": last,
            "resolved_at": last + 3 * MINUTE if status == "resolved" else None, "severity": "high",
            "anomaly_count": 1, "detectors": "error_surge", "endpoints": "", "updated_at": last}


def anomaly(anomaly_id, incident_id, service, start):
    return {"anomaly_id": anomaly_id, "incident_id": incident_id, "detector": "error_surge", "service": service,
            "metric": "error_rate", "value": 0.3, "window_start": start, "window_end": start + MINUTE,
            "severity": "high", "used_partial_window": False, "detected_at": start + MINUTE}


def summary(incident_id, created):
    return {"incident_id": incident_id, "facts_hash": f"hash-{incident_id}", "facts": "{}", "title": "t",
            "summary": "s", "grounded": True, "backend": "template", "created_at": created}


# checkout has two endpoints whose counts add up to the service's; payments has one.
CHECKOUT = [(100, 2, (60, 1), (40, 1)), (120, 3, (70, 3), (50, 0)), (90, 0, (45, 0), (45, 0))]
PAYMENTS = [(50, 1), (55, 0), (40, 2)]
INCIDENT_ID = "checkout:errors:20260108T090100Z"


def clean_rows() -> dict[str, list[dict]]:
    """Three minutes of two services, one resolved incident with its anomaly and its summary."""
    services, endpoints = [], []
    for minute, (requests, errors, cart, pay) in enumerate(CHECKOUT):
        start = T0 + minute * MINUTE
        services.append(window("checkout", start, requests, errors))
        endpoints.append(window("checkout", start, *cart, endpoint="/api/cart"))
        endpoints.append(window("checkout", start, *pay, endpoint="/api/pay"))
    for minute, (requests, errors) in enumerate(PAYMENTS):
        start = T0 + minute * MINUTE
        services.append(window("payments", start, requests, errors))
        endpoints.append(window("payments", start, requests, errors, endpoint="/api/charge"))
    return {
        "service_metrics": services,
        "endpoint_metrics": endpoints,
        "incidents": [incident(INCIDENT_ID, "checkout", T0 + MINUTE, T0 + 2 * MINUTE)],
        "anomalies": [anomaly("a1", INCIDENT_ID, "checkout", T0 + MINUTE)],
        "incident_summaries": [summary(INCIDENT_ID, T0 + 5 * MINUTE)],
    }


@pytest.fixture()
def settings(tmp_path) -> Settings:
    return load_settings(data_dir=tmp_path, retention_days=7, window_seconds=60)


@pytest.fixture()
def store(settings) -> Store:
    store = Lab(settings).store
    return store


@pytest.fixture()
def clean(store) -> Store:
    store.upsert_many(clean_rows())
    return store


def without_constraints(store: Store, table: str) -> None:
    """Re-create a table as a plain copy (no key, no NOT NULL), like a store written by another tool."""
    with store.writer() as con:
        con.execute(f"CREATE TABLE copy_of AS SELECT * FROM {table}")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE copy_of RENAME TO {table}")


def by_name(checks):
    return {c.name: c for c in checks}


# ------------------------------------------------------------------------- validation

def test_an_empty_store_passes_every_rule_and_says_it_was_empty(store, settings):
    checks = validate(store, settings, NOW)
    assert [c.name for c in checks] == list(RULES)
    assert all(c.ok and c.violations == 0 and "nothing to check" in c.message for c in checks)


def test_a_clean_store_passes_every_rule(clean, settings):
    checks = validate(clean, settings, NOW)
    assert [(c.name, c.ok, c.violations) for c in checks] == [(name, True, 0) for name in RULES]
    assert by_name(checks)["ranges"].message.startswith("15 metric windows checked")  # 6 service + 9 endpoint rows
    assert_valid(checks)  # does not raise


def plant_sql(*statements):
    def plant(store):
        with store.writer() as con:
            for sql in statements:
                con.execute(sql)
    return plant


def plant_rows(table, *rows):
    return lambda store: store.upsert(table, list(rows))


def plant_unconstrained(table, *statements):
    def plant(store):
        without_constraints(store, table)
        plant_sql(*statements)(store)
    return plant


PAYMENTS_MIN1 = T0 + MINUTE
FAILING = [
    # (rule, planted violation, violations expected)
    ("nulls", plant_sql("UPDATE endpoint_metrics SET latency_sum_ms = NULL WHERE endpoint = '/api/charge' "
                        "AND window_start = TIMESTAMPTZ '2026-01-08 09:00:00+00'"),
     1),  # one endpoint window without its latency sum
    ("nulls", plant_unconstrained("service_metrics", "UPDATE service_metrics SET p95_latency_ms = NULL "
                                  "WHERE service = 'payments'"),
     3),  # the three payments windows of a copy without NOT NULL
    ("nulls", plant_sql("UPDATE service_metrics SET avg_latency_ms = 'nan' WHERE service = 'payments' "
                        "AND window_start = TIMESTAMPTZ '2026-01-08 09:02:00+00'"),
     1),  # a NaN is a missing number
    ("ranges", plant_sql("UPDATE service_metrics SET p50_latency_ms = 200 WHERE service = 'checkout' "
                         "AND window_start = TIMESTAMPTZ '2026-01-08 09:00:00+00'"),
     1),  # p50 200 > 1.02 x p95 190 = 193.8
    ("ranges", plant_sql("UPDATE endpoint_metrics SET avg_latency_ms = -1 WHERE endpoint = '/api/cart'"),
     3),  # the three /api/cart windows have a negative average latency
    ("ranges", plant_sql("UPDATE endpoint_metrics SET latency_sum_ms = -5 WHERE endpoint = '/api/pay' "
                         "AND window_start = TIMESTAMPTZ '2026-01-08 09:01:00+00'"),
     1),  # a negative latency sum
    ("duplicate_windows", plant_rows("service_metrics", window("search", T0 + 90 * SECOND, 10, 0)),
     1),  # starts 30 s after a minute boundary
    ("duplicate_windows", plant_unconstrained("service_metrics", "INSERT INTO service_metrics SELECT * FROM "
                                              "service_metrics WHERE service = 'payments' AND window_start = "
                                              "TIMESTAMPTZ '2026-01-08 09:00:00+00'"),
     2),  # both rows of the doubled payments window
    ("window_gaps", plant_sql("DELETE FROM service_metrics WHERE service = 'payments' "
                              "AND window_start = TIMESTAMPTZ '2026-01-08 09:01:00+00'",
                              "DELETE FROM endpoint_metrics WHERE service = 'payments' "
                              "AND window_start = TIMESTAMPTZ '2026-01-08 09:01:00+00'"),
     1),  # payments has 09:00 and 09:02 but not 09:01
    ("error_rate_consistency", plant_sql("UPDATE endpoint_metrics SET error_rate = 0.5 WHERE endpoint = '/api/pay' "
                                         "AND window_start = TIMESTAMPTZ '2026-01-08 09:00:00+00'"),
     1),  # 1 error in 40 requests is 0.025, not 0.5
    ("error_rate_consistency", plant_sql("UPDATE service_metrics SET request_count = 91 WHERE service = 'checkout' "
                                         "AND window_start = TIMESTAMPTZ '2026-01-08 09:02:00+00'"),
     1),  # checkout 09:02 says 91 requests (0 errors, rate still 0), its endpoints 45 + 45 = 90
    ("incidents_without_windows", plant_rows("incidents", incident("payments:errors:x", "payments",
                                                                   T0 + 10 * MINUTE, T0 + 12 * MINUTE)),
     1),  # payments has no window between 09:10 and 09:12
    ("summaries_without_incidents", plant_rows("incident_summaries", summary("search:errors:gone", T0)),
     1),  # its incident does not exist
    ("anomalies_without_incidents", plant_rows("anomalies", anomaly("a2", "search:errors:gone", "search", T0)),
     1),  # its incident does not exist
]


@pytest.mark.parametrize(("rule", "plant", "expected"), FAILING,
                         ids=[f"{rule}-{i}" for i, (rule, _, _) in enumerate(FAILING)])
def test_each_rule_fails_on_a_planted_violation_and_names_it(clean, settings, rule, plant, expected):
    plant(clean)
    checks = by_name(validate(clean, settings, NOW))
    assert (checks[rule].ok, checks[rule].violations) == (False, expected)
    assert "e.g." in checks[rule].message
    with pytest.raises(DataQualityError) as err:
        assert_valid(list(checks.values()))
    assert f"{rule}, {expected} violation(s)" in str(err.value)


def test_a_planted_violation_breaks_only_its_own_rule(clean, settings):
    # A window 10 s long at 09:03 on both levels: too short, and nothing else wrong with it.
    short = dict(window_end=T0 + 3 * MINUTE + 10 * SECOND)
    clean.upsert_many({"service_metrics": [window("payments", T0 + 3 * MINUTE, 5, 0, **short)],
                       "endpoint_metrics": [window("payments", T0 + 3 * MINUTE, 5, 0, endpoint="/api/charge", **short)]})
    failed = {c.name: c.violations for c in validate(clean, settings, NOW) if not c.ok}
    assert failed == {"duplicate_windows": 2}  # the service row and the endpoint row


PASSING = [
    # (planted change that must not count as a violation, why)
    (plant_sql("UPDATE service_metrics SET p50_latency_ms = 193 WHERE service = 'checkout'"),
     "p50 193 <= 1.02 x p95 190 = 193.8: within one histogram bucket"),
    (plant_sql("UPDATE endpoint_metrics SET p95_latency_ms = 234, p99_latency_ms = 230 WHERE endpoint = '/api/cart'"),
     "p95 234 <= 1.02 x p99 230 = 234.6"),
    (lambda store: store.upsert_many({
        "service_metrics": [window("payments", CUTOFF - 2 * MINUTE, 50, 1)],
        "endpoint_metrics": [window("payments", CUTOFF - 2 * MINUTE, 50, 1, endpoint="/api/charge")]}),
     "a window before the cutoff: the gap since then is not judged"),
    (plant_rows("incidents", incident("search:errors:old", "search", CUTOFF - MINUTE, CUTOFF + MINUTE)),
     "opened before the cutoff: retention may have deleted its windows"),
    (plant_rows("anomalies", anomaly("a3", None, "checkout", T0)),
     "an anomaly not grouped into an incident yet"),
    (plant_rows("incidents", incident("checkout:errors:open", "checkout", T0 + 2 * MINUTE, T0 + 3 * MINUTE, "open")),
     "an open incident whose windows are there"),
]


@pytest.mark.parametrize(("plant", "why"), PASSING, ids=[why for _, why in PASSING])
def test_changes_that_break_no_rule(clean, settings, plant, why):
    plant(clean)
    assert [c.name for c in validate(clean, settings, NOW) if not c.ok] == []


def test_windows_of_another_length_point_at_the_window_setting(clean, settings):
    clean.upsert("stream_state", [{"query_id": "q", "window_seconds": 60, "updated_at": T0}])
    other = load_settings(data_dir=settings.data_dir, window_seconds=10)
    check = by_name(validate(clean, other, NOW))["duplicate_windows"]
    assert (check.ok, check.violations) == (False, 15)  # every row lasts 60 s, not 10 s
    assert "WINDOW_SECONDS=60" in check.message


def test_records_a_run_and_the_dashboard_shows_the_newest(clean, settings):
    clean.upsert("incident_summaries", [summary("search:errors:gone", T0)])
    record(clean, "run-1", validate(clean, settings, NOW), NOW)
    clean.execute("DELETE FROM incident_summaries WHERE incident_id = ?", ["search:errors:gone"])
    record(clean, "run-2", validate(clean, settings, NOW + MINUTE), NOW + MINUTE)
    assert clean.count("quality_checks") == 16  # two runs of eight rules
    newest = views.quality_checks(clean)
    assert set(newest.run_id) == {"run-2"}
    assert len(newest) == 8 and newest.ok.all()  # the failure of run-1 is history


# ------------------------------------------------------------------------- retention

def around_cutoff() -> dict[str, list[dict]]:
    """Per table one row just older than the retention (cutoff - 1 s) and one just inside it (+ 1 s)."""
    old, new = CUTOFF - SECOND, CUTOFF + SECOND
    return {
        "service_metrics": [window("checkout", old - MINUTE, 10, 0), window("checkout", new - MINUTE, 10, 0),
                            window("payments", CUTOFF - MINUTE, 10, 0)],  # ends exactly at the cutoff: kept
        "endpoint_metrics": [window("checkout", old - MINUTE, 10, 0, endpoint="/a"),
                             window("checkout", new - MINUTE, 10, 0, endpoint="/a")],
        "status_counts": [{"service": "checkout", "endpoint": "/a", "window_start": t - MINUTE, "status_code": 500,
                           "count": 1} for t in (old, new)],
        "latency_histograms": [{"service": "checkout", "endpoint": "/a", "window_start": t - MINUTE, "bucket": 250,
                                "count": 1} for t in (old, new)],
        "anomalies": [anomaly("old", "i-old", "checkout", old - MINUTE), anomaly("new", "i-new", "checkout", new - MINUTE)],
        "incidents": [incident("i-old", "checkout", old - 5 * MINUTE, old), incident("i-new", "checkout", old, new),
                      incident("i-open", "payments", CUTOFF - timedelta(days=3), CUTOFF - timedelta(days=2), "open")],
        "incident_summaries": [summary(i, NOW) for i in ("i-old", "i-new", "i-open")],
        "dead_letter_events": [{"topic": "raw_events", "kafka_partition": 0, "kafka_offset": n, "reason": "late",
                                "received_at": t} for n, t in enumerate((old, new))],
        "pipeline_runs": [{"run_id": f"r{n}", "stage": "detect", "started_at": t, "status": "ok"}
                          for n, t in enumerate((old, new))],
        "health_checks": [{"run_id": f"h{n}", "check_name": "broker", "ok": True, "message": "up", "checked_at": t}
                          for n, t in enumerate((old, new))],
        "quality_checks": [{"run_id": f"q{n}", "check_name": "nulls", "ok": True, "violations": 0, "message": "ok",
                            "checked_at": t} for n, t in enumerate((old, new))],
        "stream_batches": [{"query_id": "q", "batch_id": 1, "events": 5, "dead_letters": 0, "applied_at": old},
                           {"query_id": "q", "batch_id": 2, "events": 5, "dead_letters": 0, "applied_at": new},
                           {"query_id": "idle", "batch_id": 7, "events": 5, "dead_letters": 0,
                            "applied_at": CUTOFF - timedelta(days=30)}],
        "injected_incidents": [{"run_id": "g", "fault_id": f"f{n}", "scenario": "demo", "fault_type": "error_surge",
                                "service": "checkout", "start_time": CUTOFF - timedelta(days=1), "end_time": t}
                               for n, t in enumerate((old, new, None))],
    }


def test_retention_deletes_exactly_the_rows_older_than_the_cutoff(store, settings):
    store.upsert_many(around_cutoff())
    deleted = apply_retention(store, settings, NOW)
    assert deleted == {
        "service_metrics": 1,  # the window ending at cutoff - 1 s (ending at the cutoff and after: kept)
        "endpoint_metrics": 1,  # ditto
        "status_counts": 1,  # the row whose window (start + 60 s) ends at cutoff - 1 s
        "latency_histograms": 1,  # ditto
        "anomalies": 1,  # the one whose window ends at cutoff - 1 s
        "incident_summaries": 1,  # the summary of the deleted incident only
        "incidents": 1,  # resolved with its last anomaly at cutoff - 1 s; the open one, days older, stays
        "dead_letter_events": 1,  # received at cutoff - 1 s
        "pipeline_runs": 1,  # started at cutoff - 1 s
        "health_checks": 1,  # checked at cutoff - 1 s
        "quality_checks": 1,  # ditto
        "stream_batches": 1,  # batch 1 of q; batch 7 of the idle query is its newest and stays
        "injected_incidents": 1,  # ended at cutoff - 1 s; the one still running stays
    }
    assert store.query("SELECT incident_id FROM incidents ORDER BY 1") == [("i-new",), ("i-open",)]
    assert store.query("SELECT incident_id FROM incident_summaries ORDER BY 1") == [("i-new",), ("i-open",)]
    assert store.query("SELECT query_id, batch_id FROM stream_batches ORDER BY 1") == [("idle", 7), ("q", 2)]
    assert store.query("SELECT service, window_end FROM service_metrics ORDER BY 1") == [
        ("checkout", CUTOFF + SECOND), ("payments", CUTOFF)]
    assert store.query("SELECT fault_id FROM injected_incidents ORDER BY 1") == [("f1",), ("f2",)]
    assert apply_retention(store, settings, NOW) == dict.fromkeys(deleted, 0)  # a second run finds nothing


def test_an_open_incident_is_never_deleted(store, settings):
    store.upsert("incidents", [incident("ancient", "checkout", NOW - timedelta(days=400), NOW - timedelta(days=399),
                                        "open")])
    assert apply_retention(store, settings, NOW)["incidents"] == 0
    assert store.count("incidents") == 1


def test_retention_leaves_the_store_valid(clean, settings):
    rows = around_cutoff()
    clean.upsert_many({k: rows[k] for k in ("service_metrics", "endpoint_metrics", "anomalies", "incidents",
                                            "incident_summaries")})
    assert apply_retention(clean, settings, NOW)["incidents"] == 1  # i-old
    # The old incident, its anomaly and its summary went together: what is left still links up.
    # (The windows around the cutoff are deliberately unaligned, so only the link rules are asked.)
    checks = by_name(validate(clean, settings, NOW))
    links = ("incidents_without_windows", "summaries_without_incidents", "anomalies_without_incidents")
    assert [(name, checks[name].ok) for name in links] == [(name, True) for name in links]


# ------------------------------------------------------------------------- compaction

def test_compaction_reports_sizes_and_keeps_the_data_and_freed_space_is_reused(store, settings):
    days = 20
    with store.writer() as con:  # one window per service and minute for 20 days: 86,400 rows
        con.execute("""
            INSERT INTO service_metrics
            SELECT s, t, t + INTERVAL 60 SECOND, 100, 1, 0.01, 150, 140, 190, 230, true, t
            FROM (SELECT ? - INTERVAL (i) MINUTE AS t FROM range(?) r(i)),
                 (SELECT unnest(['checkout', 'payments', 'search']) AS s)""", [NOW, days * 24 * 60])
    deleted = apply_retention(store, settings, NOW)
    # Windows start at NOW - i minutes, i < 28,800; those ending before the cutoff (NOW - 10,080 min)
    # start at i >= 10,082: 18,718 per service, three services.
    assert deleted["service_metrics"] == 56_154
    kept = store.query("SELECT count(*), sum(request_count), min(window_end) FROM service_metrics")[0]
    before, after = compact(store)
    assert 0 < after <= before
    assert store.query("SELECT count(*), sum(request_count), min(window_end) FROM service_metrics")[0] == kept
    # The space of the deleted rows is reused: writing as many rows again barely grows the file.
    with store.writer() as con:
        con.execute("""
            INSERT INTO service_metrics
            SELECT s, t, t + INTERVAL 60 SECOND, 100, 1, 0.01, 150, 140, 190, 230, true, t
            FROM (SELECT ? + INTERVAL (i + 1) MINUTE AS t FROM range(?) r(i)),
                 (SELECT unnest(['checkout', 'payments', 'search']) AS s)""", [NOW, (days - 7) * 24 * 60])
    assert store.path.stat().st_size < 1.25 * after


# ------------------------------------------------------------------------- CLI and notebook

def test_cli_exits_1_on_a_violation_and_still_applies_retention(clean, settings):
    clean.upsert_many({"incident_summaries": [summary("search:errors:gone", T0)],
                       "dead_letter_events": [{"topic": "raw_events", "kafka_partition": 0, "kafka_offset": 1,
                                               "reason": "late", "received_at": datetime(2020, 1, 1, tzinfo=timezone.utc)}]})
    env = {"DATA_DIR": str(settings.data_dir), "DUCKDB_PATH": str(settings.duckdb_path), "RETENTION_DAYS": "7",
           "WINDOW_SECONDS": "60"}
    result = CliRunner().invoke(app, ["quality", "--json"], env=env)
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["summaries_without_incidents"]
    assert report["deleted"]["dead_letter_events"] == 1  # the 2020 dead letter
    assert report["file_bytes"]["before"] > 0
    assert len(views.quality_checks(clean)) == 8


def test_cli_exits_0_on_a_clean_store_and_deletes_nothing_with_no_retention(clean, settings):
    env = {"DATA_DIR": str(settings.data_dir), "DUCKDB_PATH": str(settings.duckdb_path)}
    result = CliRunner().invoke(app, ["quality", "--no-retention"], env=env)
    # "now" is the wall clock here; the clean windows are from 2026-01-08, so only the gaps rule
    # could depend on the date, and three consecutive minutes have no gap at any date.
    assert result.exit_code == 0, result.output
    assert "8 of 8 rules passed" in result.output and "deleted" not in result.output


def test_notebook_parameters_are_settings():
    params = papermill.inspect_notebook(str(ROOT / "notebooks" / "08_data_quality.ipynb"))
    assert set(params) == {"retention_days", "window_seconds"}
    assert set(params) <= set(Settings.model_fields)
    assert all(p["help"] and p["inferred_type_name"] != "None" for p in params.values())


def test_an_outage_incident_has_no_windows_and_that_is_not_a_violation(clean, settings):
    # payments went silent 09:10-09:12: the detector judged those periods as zero-request windows
    # (nothing is stored for them), so the incident has no window, by its nature
    outage = incident("payments:traffic:x", "payments", T0 + 10 * MINUTE, T0 + 12 * MINUTE) | {"kind": "traffic"}
    silent = anomaly("a-silent", "payments:traffic:x", "payments", T0 + 10 * MINUTE) | {
        "detector": "baseline_shift", "metric": "request_count", "value": 0.0, "request_count": 0}
    clean.upsert_many({"incidents": [outage], "anomalies": [silent]})
    assert by_name(validate(clean, settings, NOW))["incidents_without_windows"].ok
    # the same incident raised on a window with requests, which is gone, is still a violation
    clean.upsert_many({"anomalies": [silent | {"request_count": 12}]})
    assert not by_name(validate(clean, settings, NOW))["incidents_without_windows"].ok
