from datetime import datetime, timedelta, timezone

import pytest

from obslab.detect.incidents import Incident
from obslab.detect.run import DetectReport, run_detection
from obslab.generator.events import EventStream
from obslab.generator.scenario import load_scenario
from obslab.generator.truth import catalog_rows
from obslab.lab import Lab
from obslab.settings import load_settings
from obslab.stream.job import aggregate_static
from tests.stream.helpers import event_lines


def _store_with(spark, tmp_path, scenario, seconds):
    settings = load_settings(data_dir=tmp_path)
    store = Lab(settings).store
    # the scenario's services as the generator records them (SLA, SLO, calls)
    services = EventStream(load_scenario(scenario), 5, datetime(2026, 1, 5, tzinfo=timezone.utc)).services
    store.upsert("service_catalog", catalog_rows(services, scenario, datetime.now(timezone.utc)))
    lines = event_lines(scenario, seconds=seconds)
    raw = spark.createDataFrame([("t", 0, i, v) for i, v in enumerate(lines)],
                                "topic STRING, partition INT, offset LONG, value STRING")
    aggregate_static(spark, raw, settings, store)
    return settings, store


@pytest.mark.spark
def test_clean_traffic_gives_no_incident_and_reruns_change_nothing(spark, tmp_path):
    settings, store = _store_with(spark, tmp_path, "clean", 1800)  # 30 minutes at 10 events/s
    report = run_detection(store, settings)
    assert report.anomalies == 0 and report.incidents == []
    assert run_detection(store, settings).changed == []


@pytest.mark.spark
def test_mixed_faults_become_incidents_with_evidence_and_reruns_are_idempotent(spark, tmp_path):
    settings, store = _store_with(spark, tmp_path, "mixed", 1800)
    first = run_detection(store, settings)
    assert first.incidents and first.changed == first.incidents
    services = {(i.service, i.kind) for i in first.incidents}
    assert ("payments", "errors") in services and ("checkout", "latency") in services
    rows = store.query("SELECT count(*), count(DISTINCT incident_id) FROM anomalies")[0]
    assert rows[0] == first.anomalies and rows[1] == len(first.incidents)
    again = run_detection(store, settings)
    assert again.changed == [] and again.anomalies == first.anomalies  # idempotent
    # Each scheduled fault of `mixed` became exactly one incident, opened in the window it started
    # in; except the latency degradation, a ramp that starts at 09:18:17 and averages +15 % over
    # the rest of that window: within the noise of a window, it is found in the next one.
    assert [(i.service, i.kind, i.opened_at.strftime("%H:%M")) for i in first.incidents] == [
        ("checkout", "latency", "09:04"), ("payments", "errors", "09:05"), ("search", "traffic", "09:11"),
        ("payments", "errors", "09:17"), ("search", "latency", "09:19"), ("checkout", "errors", "09:21")]
    assert all(i.status == "resolved" for i in first.incidents)


# ---------------------------------------------------------------- windows written straight into a real store
# The detector reads only the store, so these tests write service windows as the stream's sink
# would (final once the 2-minute watermark has passed them) and run detection as the data grows.

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
SERVICES = ("checkout", "payments", "search")


def window(service, minute, final=True, count=200, errors=4, latency=200.0):
    """One service window: 200 requests at 2 % errors and 200 ms unless told otherwise."""
    start = T0 + minute * MINUTE
    return {"service": service, "window_start": start, "window_end": start + MINUTE, "request_count": count,
            "error_count": errors, "error_rate": errors / count if count else 0.0, "avg_latency_ms": latency,
            "p50_latency_ms": latency, "p95_latency_ms": 1.3 * latency, "p99_latency_ms": 1.5 * latency,
            "is_final": final, "updated_at": start + MINUTE}


def lab(tmp_path, **overrides):
    settings = load_settings(data_dir=tmp_path, **overrides)
    store = Lab(settings).store
    return settings, store


def incidents_of(store, service=None):
    where, params = ("WHERE service = ?", [service]) if service else ("", [])
    return store.query(f"SELECT incident_id, service, kind, status, opened_at, resolved_at, anomaly_count, detectors "
                       f"FROM incidents {where} ORDER BY opened_at", params)


def grow(store, settings, until, shape, step=5):
    """Windows up to minute `until`, `step` minutes at a time, detection after each step; the last two
    windows of a step are still open. `shape(service, minute)` gives a window's overrides, or None
    when the service sent nothing in that minute."""
    for t in range(step, until + 1, step):
        rows = []
        for m in range(max(0, t - step - 2), t):
            for service in SERVICES:
                o = shape(service, m)
                if o is not None:
                    rows.append(window(service, m, final=m + 1 <= t - 2, **o))
        store.upsert("service_metrics", rows)
        run_detection(store, settings, now=T0 + t * MINUTE)


@pytest.mark.parametrize("service, kind, fault", [
    # payments fails 30 % of its requests: error_surge and burn_rate fire on every window
    ("payments", "errors", {"errors": 60}),
    # search sends nothing at all: each silent window is a traffic drop, judged against the
    # traffic before the outage even when that has left the lookback
    ("search", "traffic", None),
])
@pytest.mark.slow  # 330 detection runs, one per minute
def test_a_four_hour_incident_keeps_one_id(tmp_path, service, kind, fault):
    settings, store = lab(tmp_path)  # the default lookback is 180 minutes: shorter than the incident
    start, end = 60, 60 + 240  # minutes

    def shape(s, m):
        return fault if s == service and start <= m < end else {}

    with store.held():
        grow(store, settings, end + 30, shape)
        found = incidents_of(store)
        (incident_id, _, got_kind, status, opened, resolved, count, _), = found  # one incident, nothing else
        assert (got_kind, status, opened) == (kind, "resolved", T0 + start * MINUTE)
        assert T0 + end * MINUTE < resolved <= T0 + (end + 30) * MINUTE
        # Every anomaly of the four hours is in it, counted once.
        assert store.query("SELECT count(*), count(DISTINCT incident_id) FROM anomalies") == [(count, 1)]
        assert count >= end - start  # at least one anomaly per window of the fault


def test_a_late_earlier_anomaly_joins_the_open_incident(tmp_path):
    settings, store = lab(tmp_path)
    history = [window(s, m) for s in SERVICES for m in range(40)]
    others = [window(s, m, final=False) for s in ("checkout", "search") for m in (40, 41)]
    # Minute 41 is open and half its 60 requests failed: raised early. Minute 40, also open (its
    # time has passed), has 6 errors in 200 requests: 3 %, within chance, so not raised yet.
    store.upsert("service_metrics", history + others + [window("payments", 40, final=False, count=200, errors=6),
                                                        window("payments", 41, final=False, count=60, errors=30)])
    run_detection(store, settings, now=T0 + 42 * MINUTE)
    (first_id, *_), = incidents_of(store, "payments")
    # Minute 40 is final: 30 errors in 200 requests is a surge, raised now for a window before the
    # incident's first one.
    store.upsert("service_metrics", [window(s, 40) for s in ("checkout", "search")] + [
        window("payments", 40, count=200, errors=30), window("payments", 41, final=False, count=100, errors=50)])
    run_detection(store, settings, now=T0 + 43 * MINUTE)
    (incident_id, _, kind, status, opened, _, count, _), = incidents_of(store, "payments")
    assert (incident_id, kind, status, opened) == (first_id, "errors", "open", T0 + 40 * MINUTE)
    assert store.query("SELECT DISTINCT incident_id FROM anomalies") == [(first_id,)]
    assert count == store.query("SELECT count(*) FROM anomalies")[0][0] >= 2


@pytest.mark.parametrize("silent, expected", [
    # search alone stops sending at minute 30 while the others go on: an outage, opened at its
    # first silent window
    ({"search"}, [("search", "traffic", T0 + 30 * MINUTE)]),
    # every service is silent from minute 30 to 35, then all come back: nothing arrived at all, so
    # the pipeline paused (freshness reports that), and no service had an outage
    (set(SERVICES), []),
])
def test_silence_is_an_outage(tmp_path, silent, expected):
    settings, store = lab(tmp_path)

    def shape(service, minute):
        return None if service in silent and 30 <= minute < 35 + (5 if len(silent) == 1 else 0) else {}

    grow(store, settings, 45, shape)
    assert [(service, kind, opened) for _, service, kind, _, opened, *_ in incidents_of(store)] == expected


@pytest.mark.parametrize("fault, kind, detector", [
    # 10 x its usual 80 ms for three minutes: far above twice its own p99 (120 ms)
    ({"latency": 800.0}, "latency", "latency_spike"),
    # 30 % errors for 30 minutes: over the last hour 16 % failed, 16 x the default SLO's 1 % budget
    ({"errors": 60}, "errors", "burn_rate"),
])
def test_a_service_no_setting_names_is_watched_by_every_detector(tmp_path, fault, kind, detector):
    settings, store = lab(tmp_path)
    assert "inventory" not in settings.latency_sla_ms and "inventory" not in settings.slo_availability
    length = 3 if kind == "latency" else 30
    rows = [window("inventory", m, **({"latency": 80.0} | (fault if 30 <= m < 30 + length else {})))
            for m in range(70)]
    store.upsert("service_metrics", rows)
    run_detection(store, settings, now=T0 + 70 * MINUTE)
    (_, _, got_kind, _, opened, _, _, detectors), = incidents_of(store, "inventory")
    assert (got_kind, opened) == (kind, T0 + 30 * MINUTE)
    assert detector in detectors.split(",")


# ---------------------------------------------------------------- the service catalogue and cascades

def catalog(store, **services):
    """service_catalog rows as the generator writes them: name -> dict(sla_ms=, slo_availability=, calls=)."""
    if not services:
        return
    store.upsert("service_catalog", [
        {"service": name, "endpoints": "[]", "sla_ms": spec.get("sla_ms"),
         "slo_availability": spec.get("slo_availability"), "calls": ",".join(spec.get("calls", [])),
         "scenario": "test", "updated_at": T0} for name, spec in services.items()])


@pytest.mark.parametrize("overrides, spiked", [
    ({}, True),  # the catalogue's SLA of 100 ms: 250 ms is more than twice it
    ({"latency_sla_ms": {"checkout": 200.0}}, False),  # the setting wins: 250 ms is under twice 200 ms
])
def test_the_catalogue_gives_the_sla_and_a_setting_overrides_it(tmp_path, overrides, spiked):
    settings, store = lab(tmp_path, **overrides)
    catalog(store, checkout={"sla_ms": 100.0})
    rows = [window(s, m, latency=250.0 if s == "checkout" and m in (40, 41) else 80.0)
            for s in SERVICES for m in range(50)]
    store.upsert("service_metrics", rows)
    run_detection(store, settings, now=T0 + 50 * MINUTE)
    detectors = ",".join(d for *_, d in incidents_of(store, "checkout"))
    assert ("latency_spike" in detectors) == spiked


def test_the_catalogue_gives_the_slo(tmp_path):
    # 25 % errors for 30 minutes burn a 1 % budget (the default SLO) 25 times too fast, but a 10 %
    # budget (the catalogue's 90 %) only 2.5 times: error_surge fires, burn_rate does not.
    settings, store = lab(tmp_path)
    catalog(store, payments={"slo_availability": 0.9})
    rows = [window(s, m, errors=50 if s == "payments" and 30 <= m < 60 else 4) for s in SERVICES for m in range(70)]
    store.upsert("service_metrics", rows)
    run_detection(store, settings, now=T0 + 70 * MINUTE)
    (*_, detectors), = incidents_of(store, "payments")
    assert detectors.split(",") == ["error_surge"]


def origins(store):
    return store.query("SELECT service, origin_service, origin_reason, related_incidents FROM incidents "
                       "ORDER BY service")


@pytest.mark.parametrize("calls, start, origin, reason", [
    # no declared dependency: two overlapping incidents, but nothing says they are one cascade
    ({}, {"payments": 40, "checkout": 41}, None, None),
    # checkout calls payments: payments is the origin though checkout's errors showed a minute earlier
    ({"checkout": {"calls": ["payments"]}}, {"checkout": 40, "payments": 41}, "payments", "checkout calls payments"),
    # ... but not when payments failed two minutes after checkout
    ({"checkout": {"calls": ["payments"]}}, {"checkout": 40, "payments": 42}, "checkout", "first to deviate"),
])
def test_a_cascade_names_its_origin_in_every_incident(tmp_path, calls, start, origin, reason):
    settings, store = lab(tmp_path)
    catalog(store, **calls)

    def shape(service, minute):
        return {"errors": 60} if service in start and start[service] <= minute < 46 else {}

    grow(store, settings, 60, shape)
    rows = origins(store)
    ids = dict(store.query("SELECT service, incident_id FROM incidents"))
    assert [(s, o, r) for s, o, r, _ in rows] == [("checkout", origin, reason), ("payments", origin, reason)]
    related = {"checkout": ids["payments"], "payments": ids["checkout"]} if origin else {"checkout": None,
                                                                                         "payments": None}
    assert {s: rel for s, _, _, rel in rows} == related


def test_a_lone_incident_has_no_origin(tmp_path):
    settings, store = lab(tmp_path)
    catalog(store, checkout={"calls": ["payments"]})
    grow(store, settings, 60, lambda s, m: {"errors": 60} if s == "payments" and 40 <= m < 46 else {})
    assert origins(store) == [("payments", None, None, None)]


def test_detector_config_defaults_are_the_settings_defaults(monkeypatch):
    from dataclasses import fields

    from obslab.detect.detectors import DetectorConfig
    from obslab.detect.run import config_from
    from obslab.settings import Settings, settings_table

    for name, _, _ in settings_table():
        monkeypatch.delenv(name, raising=False)
    from_settings = config_from(Settings(_env_file=None))
    defaults = DetectorConfig()
    # every field a setting feeds has the setting's default; the partial-window minimum maps 0 to NEVER
    assert {f.name: getattr(from_settings, f.name) for f in fields(DetectorConfig)} == {
        f.name: getattr(defaults, f.name) for f in fields(DetectorConfig)}


def test_the_detect_report_s_json_form_counts_and_names_the_changed():
    t = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)

    def incident(incident_id, status):
        return Incident(incident_id, "payments", "errors", status, t, t + timedelta(minutes=2),
                        t + timedelta(minutes=5) if status == "resolved" else None, "high", 2, "error_surge", "")

    still, done = incident("i-open", "open"), incident("i-done", "resolved")
    report = DetectReport(windows=12, anomalies=3, incidents=[still, done], changed=[still])
    # what `obslab detect --json` prints, before the caller adds how many it published
    assert report.as_dict() == {"windows": 12, "anomalies": 3, "incidents": 2, "open": 1, "changed": ["i-open"]}
