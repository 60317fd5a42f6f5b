import json

import pytest

from obslab.errors import ScenarioError
from obslab.generator.profiles import BUILT_IN
from obslab.generator.scenario import (BENIGN_TYPES, ENDPOINT_PATTERN, FAULT_TYPES, available_scenarios, fault_schedule,
                                       load_scenario, parse_scenario)


def test_the_package_ships_the_promised_scenarios():
    assert {"demo", "clean", "workshop", "mixed", "seasonal", "flash_crowd", "cascade"} <= set(available_scenarios())


@pytest.mark.parametrize("name", available_scenarios())
def test_every_shipped_scenario_loads(name):
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.duration_seconds <= 3600  # evaluation runs each on 20+ seeds
    for fault in [*scenario.faults, *scenario.benign]:
        assert fault.start_seconds + fault.duration_seconds <= scenario.duration_seconds, fault


@pytest.mark.parametrize("name", available_scenarios())
def test_no_shipped_fault_starts_on_a_window_boundary(name):
    # Real faults do not wait for the next minute; a detector must not profit from aligned starts.
    for fault in [*load_scenario(name).faults, *load_scenario(name).benign]:
        assert fault.start_seconds % 60 != 0, fault


def test_scenario_contents_match_their_promise():
    assert load_scenario("clean").faults == []  # no faults
    demo = load_scenario("demo")
    assert 45 <= min(f.start_seconds for f in demo.faults) <= 75  # first fault about 60 s in
    mixed = load_scenario("mixed")
    assert {f.type for f in mixed.faults} == set(FAULT_TYPES)  # every type
    assert len({f.service for f in mixed.faults}) >= 2  # several services
    spans = sorted((f.start_seconds, f.start_seconds + f.duration_seconds) for f in mixed.faults)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # some overlap
    assert load_scenario("random").random.anomaly_probability > 0
    seasonal = load_scenario("seasonal")
    rhythm = seasonal.traffic.seasonality
    assert rhythm.period_seconds * 2 <= seasonal.duration_seconds and rhythm.amplitude >= 0.3  # visible in a run
    assert seasonal.traffic.dispersion > 0 and len(seasonal.faults) >= 3  # noisy, with faults
    crowd = load_scenario("flash_crowd")
    assert {b.type for b in crowd.benign} == set(BENIGN_TYPES) and crowd.faults  # every benign type, and a fault
    cascade = load_scenario("cascade")
    callers = {s.name: [c.service for c in s.calls] for s in cascade.service_profiles()}
    assert callers["checkout"] == ["payments"]
    assert any(f.service == "payments" for f in cascade.faults)  # propagates to checkout
    assert any(f.service not in ("payments", "checkout") for f in cascade.faults)  # an independent fault


GOOD_FAULT = "  - {type: error_surge, service: payments, start_seconds: 10, duration_seconds: 30}\n"


@pytest.mark.parametrize(
    "text, field, why",
    [
        ("description: no name\n", "name", "Field required"),
        ("name: x\nfaults:\n  - {type: meltdown, service: payments, start_seconds: 1, duration_seconds: 1}\n",
         "faults.0.type", "Input should be"),  # unknown fault type lists the allowed ones
        ("name: x\nfaults:\n  - {type: error_surge, service: billing, start_seconds: 1, duration_seconds: 1}\n",
         "faults.0", "service 'billing' is not one of"),
        ("name: x\nfaults:\n  - {type: endpoint_outage, service: search, endpoint: /api/cart,"
         " start_seconds: 1, duration_seconds: 1}\n", "faults.0", "not an endpoint of search"),
        ("name: x\nfaults:\n  - {type: error_surge, service: payments, start_seconds: 1, duration_seconds: 1,"
         " magnitude: 3}\n", "faults.0", "magnitude 3.0 out of range for error_surge"),
        ("name: x\nfaults:\n  - {type: error_surge, service: payments, start_seconds: -5, duration_seconds: 1}\n",
         "faults.0.start_seconds", "greater than or equal to 0"),
        ("name: x\ntraffic: {events_per_second: 0}\n", "traffic.events_per_second", "greater than 0"),
        ("name: x\ntraffic: {service_mix: {billing: 1}}\n", "traffic.service_mix", "unknown service"),
        # services
        ("name: x\nservices: [{name: inventory}]\n", "services.0", "needs endpoints and latency_ms"),
        ("name: x\nservices: [{name: inventory, endpoints: [api/stock], latency_ms: 5}]\n", "services.0.endpoints",
         "not URL paths"),  # the stream would dead-letter it
        ("name: x\nservices: [{name: search}, {name: search}]\n", "services", "declared twice"),
        ("name: x\nservices: [{name: 'my shop'}]\n", "services.0.name", "should match pattern"),
        ("name: x\nservices: [{name: search, share: 0}]\n", "services", "share 0"),
        ("name: x\nservices: [{name: search, lantency_ms: 5}]\n", "services.0.lantency_ms", "Extra inputs"),
        ("name: x\nservices: [{name: inventory, endpoints: [/a], latency_ms: 5}]\n"
         "faults:\n" + GOOD_FAULT, "faults.0.service", "service 'payments' is not one of ['inventory']"),
        ("name: x\nservices: [{name: search}]\ntraffic: {service_mix: {checkout: 1}}\n", "traffic.service_mix",
         "unknown service"),
        # calls
        ("name: x\nservices: [{name: search, calls: [{service: billing}]}]\n", "services.0.calls.0.service",
         "service 'billing' is not one of"),
        ("name: x\nservices: [{name: search, calls: [{service: search}]}]\n", "services.0.calls.0.service",
         "cannot call itself"),
        ("name: x\nservices: [{name: search, calls: [{service: payments, share: 1.5}]}, {name: payments}]\n",
         "services.0.calls.0.share", "less than or equal to 1"),
        ("name: x\nservices: [{name: search, calls: [{service: payments, lag_seconds: -1}]}, {name: payments}]\n",
         "services.0.calls.0.lag_seconds", "greater than or equal to 0"),
        ("name: x\nservices:\n  - {name: a, endpoints: [/a], latency_ms: 5, calls: [{service: b}]}\n"
         "  - {name: b, endpoints: [/b], latency_ms: 5, calls: [{service: c}]}\n"
         "  - {name: c, endpoints: [/c], latency_ms: 5, calls: [{service: a}]}\n", "services", "a -> b -> c -> a"),
        # benign events
        ("name: x\nbenign: [{type: meteor, service: search, start_seconds: 1, duration_seconds: 1}]\n",
         "benign.0.type", "Input should be"),
        ("name: x\nbenign: [{type: flash_crowd, service: billing, start_seconds: 1, duration_seconds: 1}]\n",
         "benign.0.service", "service 'billing' is not one of"),
        ("name: x\nbenign: [{type: flash_crowd, service: search, start_seconds: 1, duration_seconds: 1,"
         " magnitude: 0.5}]\n", "benign.0", "magnitude 0.5 out of range for flash_crowd"),
        ("name: x\nbenign: [{type: deploy_blip, service: search, start_seconds: 1, duration_seconds: 600}]\n",
         "benign.0", "use an error_surge"),
        # rhythm and noise
        ("name: x\ntraffic: {seasonality: {amplitude: 1}}\n", "traffic.seasonality.amplitude", "less than 1"),
        ("name: x\ntraffic: {seasonality: {period_seconds: 600, peak_at_seconds: 600}}\n", "traffic.seasonality",
         "must be below period_seconds"),
        ("name: x\ntraffic: {dispersion: -0.1}\n", "traffic.dispersion", "greater than or equal to 0"),
        ("name: x\nfualts: []\n", "fualts", "Extra inputs are not permitted"),  # typos are not ignored
        ("name: x\nfaults: [\n", "line", "not valid YAML"),
        ("- just\n- a list\n", "(top level)", "expected a mapping"),
    ],
)
def test_invalid_scenarios_name_file_field_and_why(tmp_path, text, field, why):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    assert err.source == str(path)
    assert err.field.startswith(field), err
    assert why in err.why, err


def test_unknown_name_lists_the_shipped_scenarios():
    with pytest.raises(ScenarioError, match="shipped: .*demo"):
        load_scenario("no-such-scenario")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read it"):
        load_scenario(tmp_path / "absent.yaml")


def test_outage_without_endpoint_hits_the_first_endpoint():
    scenario = parse_scenario("name: x\nfaults:\n  - {type: endpoint_outage, service: search, "
                              "start_seconds: 0, duration_seconds: 10}\n")
    assert scenario.faults[0].effective_endpoint == "/api/search"
    assert scenario.faults[0].effective_magnitude == 1.0
    own = parse_scenario("name: x\nservices: [{name: inventory, endpoints: [/api/stock, /api/reserve], latency_ms: 9}]\n"
                         "faults:\n  - {type: endpoint_outage, service: inventory, start_seconds: 0, duration_seconds: 10}\n")
    assert own.faults[0].effective_endpoint == "/api/stock"  # the scenario's service, not a built-in


def test_without_services_the_three_built_ins_run_with_their_own_error_rates():
    services = load_scenario("clean").service_profiles()
    assert [s.name for s in services] == ["checkout", "payments", "search"]
    assert {s.name: s.error_rate for s in services} == {"checkout": 0.01, "payments": 0.015, "search": 0.005}
    assert [s.endpoints for s in services] == [BUILT_IN[s.name].endpoints for s in services]


@pytest.mark.parametrize("text, expected", [
    # traffic.error_rate given: every service without an error_rate of its own takes it (old files keep meaning)
    ("name: x\ntraffic: {error_rate: 0.05}\n", {"checkout": 0.05, "payments": 0.05, "search": 0.05}),
    # an error_rate on the service wins over traffic.error_rate
    ("name: x\ntraffic: {error_rate: 0.05}\nservices: [{name: search, error_rate: 0.001}, {name: payments}]\n",
     {"search": 0.001, "payments": 0.05}),
    # a new service without one takes traffic.error_rate's default, 2 %
    ("name: x\nservices: [{name: inventory, endpoints: [/a], latency_ms: 5}]\n", {"inventory": 0.02}),
])
def test_error_rate_precedence(text, expected):
    assert {s.name: s.error_rate for s in parse_scenario(text).service_profiles()} == expected


def test_service_mix_wins_over_shares_and_a_built_in_name_fills_the_rest():
    scenario = parse_scenario("name: x\nservices:\n  - {name: search, share: 5, sla_ms: 99}\n"
                              "  - {name: inventory, endpoints: [/a], latency_ms: 5, share: 1}\n")
    search, inventory = scenario.service_profiles()
    assert (search.share, inventory.share) == (5, 1)
    assert search.latency_ms == 50 and search.endpoints == BUILT_IN["search"].endpoints and search.sla_ms == 99
    assert inventory.sla_ms is None and inventory.slo_availability is None  # nothing invented
    mixed = parse_scenario("name: x\nservices: [{name: search, share: 5}, {name: payments}]\n"
                           "traffic: {service_mix: {payments: 2}}\n")
    assert [s.share for s in mixed.service_profiles()] == [0.0, 2.0]  # a service the mix does not name gets none


def test_scenario_endpoint_rule_is_the_stream_s():
    from obslab.stream.transform import ENDPOINT_PATTERN as STREAM_RULE

    assert ENDPOINT_PATTERN == STREAM_RULE


def test_schedule_lists_faults_and_benign_events_in_time_order():
    rows = fault_schedule(load_scenario("flash_crowd"))
    assert [r["start_s"] for r in rows] == sorted(r["start_s"] for r in rows)
    assert json.dumps(rows)  # plain values, for a DataFrame
    assert {r["benign"] for r in rows} == {True, False}


def test_the_documented_examples_are_valid_scenarios():
    import textwrap
    from pathlib import Path

    import obslab.generator.scenario as module

    doc = module.__doc__
    parse_scenario(textwrap.dedent(doc[doc.index("    name: demo"):]), "scenario.py docstring")
    page = (Path(module.__file__).parents[3] / "docs" / "generator.md").read_text()
    example = page.split("## Traffic model", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    assert len(parse_scenario("name: docs\n" + example, "docs/generator.md").service_profiles()) == 4
