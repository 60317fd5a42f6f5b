"""The grounding check: generated text may only state what the facts hold, as what they hold.

Each number in the text is read together with what it measures, as the text itself says it:

- its unit ("%", "ms" or "s", "requests", "requests per minute", "min", "times") makes it a
  percentage, latency, count, request rate, duration or ratio, and it must round (at the precision
  written) to a fact of that same kind: a request count written as milliseconds is not grounded,
  and a status code or a year is never an amount of anything.
- a percentage followed by "above", "higher", "more", ... is a relative change; the facts hold
  none, so such a claim is never grounded.
- a number without a unit takes the unit of the number it pairs with ("151 and 240 ms", or
  "(usually 301)" after "90 requests per minute"). Otherwise a known HTTP status is a status code
  (one of the facts' codes; a count in parentheses after it, "503 (210)", must be that code's
  count), a year must be the year of the facts' date, and any other bare number says nothing
  checkable and is refused.
- times (09:05) and dates (2026-01-05) must be the facts' own.
- an endpoint (a path) must be one of the facts' endpoints and shown in quotes: endpoint names come
  from events, so they are data, and whatever they say is never read as words of the narrative.
- statements (title, summary, impact) name only components the facts name: no "database", no
  "auth service". Likely causes and suggested actions propose where to look, so they may name
  components (their numbers are still checked). A service of the prompt's examples must be in
  the facts, and a service said to be healthy must be healthy in the facts.

`problems(text, facts)` lists what is wrong with a statement (empty: grounded); `narrative_problems`
checks the five fields of a narrative. `missing_headline` adds one requirement for a model's
summary: it states the incident's main number, as a number of that kind.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from obslab.narrate.facts import Quantity, quantities, shown
from obslab.narrate.prompts import EXAMPLE_SERVICES

STATEMENTS = ("title", "summary", "impact")  # say what happened
PROPOSALS = ("likely_causes", "suggested_actions")  # say where to look

_TIME = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?::\d{2})?(?![\d:])")
_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_PATH = re.compile(r"/[A-Za-z0-9_.~%-]+(?:/[A-Za-z0-9_.~%-]+)*")
_CODE_CLASS = re.compile(r"(?<![\w/.])([1-5])xx\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w/.:,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?!\d)")
_STATUS_CODES = {100, 101, 200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 410, 413, 422,
                 429, 499, 500, 501, 502, 503, 504, 507, 508, 511, 520, 521, 522, 523, 524, 599}

# What a number measures, by the unit written after it: (kind, scale), where scale turns a fact's
# value (ms, %, requests, requests per minute, minutes) into the unit written. Order matters: the
# longer unit first ("requests per minute" before "requests").
_CODE, _YEAR, _CHANGE, _CODE_COUNT, _UNKNOWN = "code", "year", "change", "code count", "unknown"
_UNITS: list[tuple[re.Pattern, tuple[tuple[str, float], ...]]] = [(re.compile(p, re.IGNORECASE), k) for p, k in [
    (r"\s*(?:%|percent\b|per\s+cent\b)(?=\s+(?:above|higher|more|below|lower|less|fewer|up|down|increase|"
     r"decrease|drop|rise|jump|spike)\b)", ((_CHANGE, 1.0),)),
    (r"\s*(?:%|percent\b|per\s+cent\b)", (("percent", 1.0),)),
    (r"\s*(?:milliseconds?|msecs?|ms)\b", (("latency", 1.0),)),
    (r"\s*(?:(?:requests?|req|calls)\s*)?(?:per|/|an?)\s*(?:minute|min)\b|\s*rpm\b", (("rate", 1.0),)),
    (r"\s*(?:(?:requests?|req|calls)\s*)?(?:per|/|an?)\s*(?:second|sec|s)\b|\s*rps\b", (("rate", 1 / 60),)),
    (r"\s*(?:failed\s+)?(?:requests?|calls)\b", (("count", 1.0),)),
    (r"\s*(?:errors?|failures?|responses?)\b", ((_CODE, 1.0), ("count", 1.0))),
    (r"\s*-?\s*(?:seconds?|secs?|s)\b", (("latency", 0.001), ("duration", 60.0))),
    (r"\s*-?\s*(?:minutes?|mins?)\b", (("duration", 1.0),)),
    (r"\s*-?\s*(?:hours?|hrs?|h)\b", (("duration", 1 / 60),)),
    (r"\s*(?:times\b|x\b|×|-?fold\b)", (("ratio", 1.0),)),
]]
_LABELS = {"percent": "percentage", "latency": "latency", "rate": "request rate", "count": "count",
           "duration": "duration", "ratio": "ratio", _CODE: "status code"}
_BASELINE_WORD = re.compile(r"\b(?:usually|usual|normally|normal|typically|typical|baseline|versus|vs\.?|"
                            r"compared\s+(?:to|with)|instead\s+of|against)\s*[:(]?\s*$", re.IGNORECASE)
_PAIRED = re.compile(r"\s*(?:and|to|or|-|–|/)\s*")
_SENTENCE_END = re.compile(r"[.!?;](?:\s|$)|\n")

# Components a statement may not name unless the facts do (the facts name services, their state,
# the problem and the trend: nothing about databases, hosts or deploys).
_COMPONENTS = re.compile(
    r"\b(databases?|db|postgres(?:ql)?|mysql|mongo(?:db)?|redis|memcached?|caches?|kafka|queues?|brokers?|"
    r"load[\s-]?balancers?|dns|cdn|network|disks?|storage|cpus?|memory|servers?|hosts?|nodes?|pods?|"
    r"containers?|clusters?|gateways?|prox(?:y|ies)|ingress|dependenc(?:y|ies)|upstream|downstream|"
    r"third[\s-]party|providers?|instances?|regions?|data\s?cent(?:er|re)s?|deploy(?:s|ed|ments?)?|"
    r"releases?|rollbacks?)\b", re.IGNORECASE)
_NAMED_SERVICE = re.compile(r"\b([A-Za-z][\w.-]*)\s+services?\b")
_NOT_A_NAME = {"the", "a", "an", "this", "that", "its", "their", "other", "each", "every", "all", "any", "no",
               "same", "whole", "entire", "affected", "healthy", "unhealthy", "one", "two", "three", "both",
               "these", "those", "which", "what", "of", "to", "for", "and", "or", "in", "on", "at", "with", "by",
               "from", "was", "were", "is", "are", "had", "has", "have", "not", "only", "main", "more", "most",
               "some", "several", "many", "another", "first", "second", "slow", "failing", "named"}
_CLAUSE = re.compile(r"[.;!?](?:\s|$)|\n|,|\b(?:while|but|whereas|though|although|except)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Claim:
    """One number the text states, with what it measures as far as the text says."""

    written: str  # as written, with its unit: "1,240 requests"
    value: float
    decimals: int
    kinds: tuple[tuple[str, float], ...]  # (kind, scale from the facts' unit to the unit written)
    code: int | None = None  # for a code count: the status code it counts ("503 (210)")


def problems(text: str, facts: dict, proposals: bool = False) -> list[str]:
    """Why the text is not grounded in the facts (empty when it is). `proposals`: the text proposes
    causes or actions, so it may name components the facts do not (everything else is checked)."""
    found: list[str] = []
    rest = _without_endpoints(_without_times(text, facts, found), facts, found)
    codes = {c["code"]: c["count"] for c in facts.get("status_codes", [])}
    for m in _CODE_CLASS.finditer(rest):
        if not any(c // 100 == int(m.group(1)) for c in codes):
            found.append(f"status class {m.group(0)} is not in the facts")
    rest = _CODE_CLASS.sub(" ", rest)
    found += _named_services(rest, facts)  # endpoint names are out: "/api/search" names no service
    for name in _services(facts):  # a service named "2fa" is a name, not a number
        if name and any(ch.isdigit() for ch in name):
            rest = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", " ", rest, flags=re.IGNORECASE)
    reference = quantities(facts)
    for claim in claims(rest):
        wrong = _check(claim, reference, codes, facts)
        if wrong:
            found.append(wrong)
    if not proposals:
        found += _components(rest, facts)
    return found


def narrative_problems(fields: dict, facts: dict) -> list[str]:
    """What is wrong in a narrative's fields: statements are checked fully, proposals (likely causes,
    suggested actions) may also name components to look at."""
    def text(keys):
        parts = []
        for key in keys:
            value = fields.get(key, "")
            parts.extend(value if isinstance(value, list) else [value])
        return "\n".join(str(p) for p in parts)

    return problems(text(STATEMENTS), facts) + problems(text(PROPOSALS), facts, proposals=True)


def missing_headline(text: str, facts: dict) -> list[str]:
    """A summary must state the incident's headline number, as that kind of number (the error rate
    of an errors incident, the latency of a latency one, the request rate of a traffic one): a
    grounded text about something else, such as latency for an errors incident, is no summary of it."""
    wanted = {"errors": ("error rate", "percent", [facts.get("error_rate_pct")]),
              "latency": ("latency", "latency", [facts.get("avg_latency_ms"), facts.get("p99_latency_ms")]),
              "traffic": ("request rate", "rate", [facts.get("requests_per_minute")])}.get(facts.get("kind"))
    if wanted is None:
        return []
    label, kind, values = wanted
    targets = [Quantity(kind, float(v), label) for v in values if v is not None]
    targets += [q for q in quantities({"signal": facts.get("signal") or {}}) if q.name == "signal.value"]
    plain = _without_endpoints(_without_times(text, facts, []), facts, [])
    for claim in claims(plain):
        if any(_matches(claim, q) for q in targets):
            return []
    return [f"does not state the {label} ({', '.join(shown(q.value) for q in targets)})"]


def claims(text: str) -> list[Claim]:
    """The numbers of a text (times, dates and endpoints already taken out), each with its kinds."""
    found = [(m, *_unit(text, m)) for m in _NUMBER.finditer(text)]
    out: list[Claim] = []
    carried: tuple | None = None  # the unit of the last number with one, in this sentence
    for i, (m, kinds, end) in enumerate(found):
        value = float(m.group(1).replace(",", "") + (m.group(2) or ""))
        decimals = len(m.group(2)) - 1 if m.group(2) else 0
        if i and _SENTENCE_END.search(text, found[i - 1][2], m.start()):
            carried = None
        before = text[max(0, m.start() - 40):m.start()]
        code = None
        if not kinds:
            after = found[i + 1] if i + 1 < len(found) else None
            previous = out[-1] if out else None
            if (previous and previous.kinds[0][0] == _CODE and previous.value in _STATUS_CODES
                    and re.fullmatch(r"\s*\(\s*", text[found[i - 1][2]:m.start()])
                    and re.match(r"\s*\)", text[m.end():])):
                kinds, code = ((_CODE_COUNT, 1.0),), int(previous.value)  # "503 (210)": 210 responses were 503
            elif after and after[1] and after[1][0][0] != _CODE and _PAIRED.fullmatch(text[m.end():after[0].start()]):
                kinds = after[1]  # "151 and 240 ms"
            elif carried and _BASELINE_WORD.search(before):
                kinds = carried  # "90 requests per minute (usually 301)"
            elif value.is_integer() and int(value) in _STATUS_CODES:
                kinds = ((_CODE, 1.0),)
            elif value.is_integer() and 1900 <= value <= 2100:
                kinds = ((_YEAR, 1.0),)
            else:
                kinds = carried or ((_UNKNOWN, 1.0),)
        elif kinds[0][0] not in (_CODE, _CHANGE):
            carried = kinds
        out.append(Claim(text[m.start():end].strip(), value, decimals, kinds, code))
    return out


# ---------------------------------------------------------------------------- helpers

def _unit(text: str, m: re.Match) -> tuple[tuple, int]:
    """The kinds the unit after a number gives it, and where the unit ends (no unit: (), m.end())."""
    for pattern, kinds in _UNITS:
        u = pattern.match(text, m.end())
        if u:
            if u.group(0) == "s" and m.group(2) is None and int(m.group(1).replace(",", "")) in _STATUS_CODES:
                return ((_CODE, 1.0),), u.end()  # "503s": responses with status 503
            return kinds, u.end()
    return (), m.end()


def _matches(claim: Claim, q: Quantity) -> bool:
    tolerance = 0.5 * 10 ** -claim.decimals + 1e-9  # "31%" stands for 30.8, "1.6 s" for 1630 ms
    return any(kind == q.kind and abs(claim.value - q.value * scale) <= tolerance for kind, scale in claim.kinds)


def _check(claim: Claim, reference: list[Quantity], codes: dict, facts: dict) -> str | None:
    kind = claim.kinds[0][0]
    whole = int(claim.value) if claim.value.is_integer() else None
    year = int(facts["date"][:4]) if str(facts.get("date", ""))[:4].isdigit() else None
    if kind == _CODE_COUNT:
        if claim.code in codes and codes[claim.code] != claim.value:
            return (f"count {claim.written} is not the count of status code {claim.code} in the facts "
                    f"({codes[claim.code]})")
        return None  # an unknown code is reported as such, once
    if kind == _YEAR:
        return None if whole == year else f"year {claim.written} is not in the facts"
    if kind == _UNKNOWN:
        return f"number {claim.written} does not say what it measures (no unit), so it cannot be checked"
    if kind == _CHANGE:
        return f"relative change {claim.written} is not in the facts (they hold rates and values, not changes)"
    if any(k == _CODE for k, _ in claim.kinds) and whole in codes:
        return None
    if any(_matches(claim, q) for q in reference):
        return None
    if any(k == _CODE for k, _ in claim.kinds) and whole in _STATUS_CODES:
        return f"status code {whole} is not in the facts"
    measured = next(k for k, _ in claim.kinds if k != _CODE)
    message = f"{_LABELS[measured]} {claim.written} is not in the facts"
    # Say what the number is in the facts, when it is there as something else: the usual mistake.
    if whole is not None and whole in codes:
        return message + f" ({whole} is a status code there)"
    if whole is not None and whole == year:
        return message + f" ({whole} is the year of the date there)"
    other = next((q for q in reference if abs(claim.value - q.value) <= 0.5 * 10 ** -claim.decimals + 1e-9), None)
    if other is not None:
        return message + f" ({shown(claim.value)} is {other.name} there, a {_LABELS.get(other.kind, other.kind)})"
    return message


def _without_times(text: str, facts: dict, found: list[str]) -> str:
    for m in _DATE.finditer(text):
        if m.group(0) != facts.get("date"):
            found.append(f"date {m.group(0)} is not in the facts")
    rest = _DATE.sub(" ", text)
    times = {facts.get("start"), facts.get("end")}
    for m in _TIME.finditer(rest):
        if f"{int(m.group(1)):02d}:{m.group(2)}" not in times:
            found.append(f"time {m.group(0)} is not in the facts")
    return _TIME.sub(" ", rest)


def _without_endpoints(text: str, facts: dict, found: list[str]) -> str:
    """The text without the facts' endpoint names (each must be quoted); other paths are unknown."""
    rest = text
    for endpoint in sorted({e["endpoint"] for e in facts.get("top_endpoints", [])}, key=len, reverse=True):
        for quoted in (json.dumps(endpoint), json.dumps(endpoint[:80]), f'"{endpoint}"', f"'{endpoint}'",
                       f"`{endpoint}`", f"“{endpoint}”"):
            rest = rest.replace(quoted, " ")
        if endpoint in rest:
            found.append(f"endpoint {endpoint} is not quoted")
            rest = rest.replace(endpoint, " ")
    for m in _PATH.finditer(rest):
        found.append(f"endpoint {m.group(0)} is not in the facts")
    return _PATH.sub(" ", rest)


def _services(facts: dict) -> dict[str, str]:
    """Every service the facts name, lower-cased, with its state."""
    out = {str(o["service"]).lower(): o["state"] for o in facts.get("other_services", [])}
    out[str(facts.get("service", "")).lower()] = "has this incident"
    return out


def _named_services(text: str, facts: dict) -> list[str]:
    found = []
    services = _services(facts)
    for name in sorted(EXAMPLE_SERVICES - set(services)):
        if re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE):
            found.append(f"service {name} is not in the facts")  # copied from the prompt's examples
    for clause in _CLAUSE.split(text):
        if not re.search(r"(?<!un)\bhealthy\b", clause, re.IGNORECASE) or re.search(r"\bnot\b", clause, re.IGNORECASE):
            continue
        for name, state in services.items():
            if state != "healthy" and name and re.search(rf"\b{re.escape(name)}\b", clause, re.IGNORECASE):
                found.append(f"service {name} is said to be healthy, but the facts say it {state}")
    return found


def _components(text: str, facts: dict) -> list[str]:
    """Components and services a statement names that the facts do not."""
    words = set()
    named = (facts.get("service"), facts.get("problem"), facts.get("kind"), (facts.get("before") or {}).get("trend"),
             *(o["service"] for o in facts.get("other_services", [])))
    for value in named:
        words |= set(re.split(r"[^a-z0-9]+", str(value or "").lower()))
    services = set(_services(facts))
    found = []
    for m in _COMPONENTS.finditer(text):
        if not all(p in words or p[:-1] in words for p in re.split(r"[^a-z0-9]+", m.group(0).lower())):
            found.append(f"component '{m.group(0)}' is not in the facts")
    for m in _NAMED_SERVICE.finditer(text):
        name = m.group(1).lower()
        if name not in services and name not in _NOT_A_NAME and not _COMPONENTS.fullmatch(name):
            found.append(f"service {m.group(1)} is not in the facts")
    return found
