"""The rule-based narrative, on the facts of a small hand-written store and on hand-made facts."""

import pytest

from obslab.narrate import template
from obslab.narrate.facts import build_facts
from obslab.narrate.grounding import narrative_problems
from tests.narrate.test_facts import INCIDENT, incident_store


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    """inventory's errors incident, 09:05-09:09: 4 windows of 630 requests with 242 errors each."""
    return build_facts(incident_store(tmp_path_factory.mktemp("template") / "s.duckdb"), INCIDENT, 60)


def _hand_made(kind: str, **changes) -> dict:
    """Facts of a `kind` incident of `api` with two endpoints; only what the template reads."""
    facts = {"incident_id": f"api:{kind}:x", "service": "api", "kind": kind, "status": "open", "severity": "high",
             "problem": {"errors": "error rate", "latency": "latency", "traffic": "traffic"}[kind],
             "start": "10:00", "end": "10:10", "duration_minutes": 10, "requests": 1000, "requests_per_minute": 100,
             "error_rate_pct": 3.0, "avg_latency_ms": 900, "p99_latency_ms": 2000,
             "before": {"requests_per_minute": 400, "error_rate_pct": 2.5, "avg_latency_ms": 100,
                        "p99_latency_ms": 300, "trend": "steady"},
             "status_codes": [],
             "top_endpoints": [{"endpoint": "/slow", "requests": 500, "error_rate_pct": 3.0, "avg_latency_ms": 1500},
                               {"endpoint": "/fast", "requests": 500, "error_rate_pct": 3.0, "avg_latency_ms": 300}],
             "other_services": []}
    return facts | changes


def test_an_errors_incident_says_how_many_failed_of_what_and_where(facts):
    story = template.narrative(facts)
    assert story["title"] == "inventory: error rate incident (resolved), critical"
    # 968 of 2520 requests failed (38.4 %); the baseline windows failed 12 of 590 (2.0 %, shown as 2)
    assert story["summary"] == (
        "Inventory failed 38.4% of 2520 requests from 09:05 to 09:09 UTC, against a usual 2%. "
        "Most failures were 503 (700) and 500 (268). "  # 4 x 175 503s; 4 x (50 + 17) 500s
        'The most affected endpoint was "/api/stock". '  # 900 of its 1920 requests failed, 68 of /api/reserve's 600
        "Checkout stayed healthy. Ledger had incidents too. Reports sent no requests.")
    assert story["impact"] == "38.4% of 2520 requests to inventory failed between 09:05 and 09:09 UTC (usually 2%)."
    assert story["likely_causes"] == [
        "a dependency or an instance is unavailable (mostly 503 responses)",  # 503 is the commonest code
        'a fault local to "/api/stock"',  # 46.9 % of its requests failed: more than twice /api/reserve's 11.3 %
    ]
    assert story["suggested_actions"][0] == ('Look at the 503 and 500 responses of "/api/stock" in the logs '
                                             "from 09:05 UTC.")
    assert narrative_problems(story, facts) == []


@pytest.mark.parametrize("trend, first_cause", [
    ("rising", "gradual saturation"),  # latency was already climbing before the incident
    ("steady", "a sudden slowdown"),
])
def test_a_latency_incident_reads_the_trend_and_names_a_much_slower_endpoint(trend, first_cause):
    facts = _hand_made("latency", before=_hand_made("latency")["before"] | {"trend": trend})
    causes = template.likely_causes(facts)
    assert causes[0].startswith(first_cause)
    assert causes[1] == 'something specific to "/slow", the slowest endpoint'  # 1500 ms > 2 x 300 ms
    assert template.summary(facts) == ("Api slowed down from 10:00 to 10:10 UTC: average latency 900 ms and p99 "
                                       "2000 ms, against a usual 100 ms and 300 ms. "
                                       'The most affected endpoint was "/slow".')


def test_a_traffic_incident_compares_requests_per_minute():
    facts = _hand_made("traffic")
    # traffic names no endpoint: fewer requests is not any one endpoint's fault
    assert template.summary(facts) == ("Api received 100 requests per minute from 10:00 to 10:10 UTC, "
                                       "against a usual 400.")
    assert template.impact(facts) == "api handled 100 requests per minute between 10:00 and 10:10 UTC, usually 400."


def test_errors_spread_evenly_are_a_service_wide_problem():
    # both endpoints fail 3 % of their requests: no endpoint stands out
    causes = template.likely_causes(_hand_made("errors", status_codes=[{"code": 500, "count": 30}]))
    assert causes == ["an application error, often from a recent change (mostly 500 responses)",
                      "a service-wide problem: the errors are spread over its endpoints"]


def test_the_summary_is_cut_at_the_word_limit():
    many = [{"service": f"svc{i:03d}", "state": "healthy"} for i in range(100)]  # a 100-name sentence
    summary = template.summary(_hand_made("traffic", other_services=many))
    words = summary.split()
    assert len(words) == template.MAX_SUMMARY_WORDS + 1 and words[-1] == "..."  # 80 words, then the ellipsis
