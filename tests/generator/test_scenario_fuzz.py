"""Scenario YAML faced with hostile edits (hypothesis): a shipped scenario with one value anywhere in
it replaced (a huge, negative, NaN or infinite number, text, a list, a mapping, nothing) is either
refused with a ScenarioError naming the field, or accepted and then generates events without error
(issue 26, item 2)."""

from datetime import datetime, timezone

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from obslab.generator.events import EventStream
from obslab.generator.scenario import ScenarioError, _package_dir, parse_scenario
from tests.fuzzing import examples

DEMO = yaml.safe_load((_package_dir() / "demo.yaml").read_text())
START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def _paths(node, path=()):
    """Every place in the parsed YAML: (key or index, ...) of each mapping value and list item."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


PATHS = [p for p in _paths(DEMO) if p]
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.text(max_size=30),
    st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([[], {}, [1, 2], {"a": 1}, "/api/x", "/" + "x" * 5000, 1e300, -1e300]),
)


def _replaced(path, value):
    doc = yaml.safe_load(yaml.safe_dump(DEMO))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.fuzz
@settings(max_examples=examples(250), deadline=None)
@given(path=st.sampled_from(PATHS), value=HOSTILE)
def test_a_hostile_value_is_refused_naming_the_field_or_generates(path, value):
    text = yaml.safe_dump(_replaced(path, value), allow_unicode=True)
    try:
        scenario = parse_scenario(text, "fuzzed.yaml")
    except ScenarioError as err:
        assert "fuzzed.yaml" in str(err), str(err)  # names the file (and the field, by construction)
        return
    stream = EventStream(scenario, 7, START, None)
    batch = stream.tick(START, 5.0)
    assert len(batch.json_lines()) == len(batch)
