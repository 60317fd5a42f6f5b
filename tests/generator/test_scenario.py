import pytest

from obslab.errors import ScenarioError
from obslab.generator.scenario import FAULT_TYPES, available_scenarios, load_scenario, parse_scenario


def test_the_package_ships_the_promised_scenarios():
    assert {"demo", "clean", "workshop", "mixed"} <= set(available_scenarios())


@pytest.mark.parametrize("name", available_scenarios())
def test_every_shipped_scenario_loads(name):
    scenario = load_scenario(name)
    assert scenario.name == name
    for fault in scenario.faults:
        assert fault.start_seconds + fault.duration_seconds <= scenario.duration_seconds, fault


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
