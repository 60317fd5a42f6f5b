"""Every setting's environment variable faced with hostile text (hypothesis): the settings either load
or refuse with a ConfigError that names that variable; nothing else escapes (issue 26, item 2)."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from obslab.errors import ConfigError
from obslab.settings import Settings, load_settings
from tests.fuzzing import examples

NAMES = sorted(Settings.model_fields)

# Text a person or a broken script may put in a variable: any unicode, numbers out of range, JSON-ish
# fragments, huge and negative numbers, NaN and infinities, paths and whitespace.
HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "1e309", "99999999999999999999", "true",
                     "{", "[]", "{}", '{"a": 1}', "null", "\x00", "../../etc", "127.0.0.1:99999", "☃"]),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@pytest.mark.fuzz
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), value=HOSTILE)
def test_a_hostile_value_loads_or_is_refused_naming_its_variable(monkeypatch, tmp_path, name, value):
    monkeypatch.chdir(tmp_path)  # no project .env in the way
    for other in NAMES:
        monkeypatch.delenv(other.upper(), raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    if "\x00" in value:  # the operating system refuses NUL in the environment: nothing to test
        return
    monkeypatch.setenv(name.upper(), value)
    try:
        load_settings()
    except ConfigError as err:
        assert name.upper() in str(err) and "Fix the environment variable" in str(err), str(err)


@pytest.mark.parametrize("name, value", [
    ("KAFKA_PORT", "-1"),
    ("EVENTS_PER_SECOND", "nan"),
    ("EVENTS_PER_SECOND", "inf"),  # a rate of infinity: the generator would never sleep
    ("TRIGGER_SECONDS", "inf"),  # a micro-batch that never comes
    ("BACKFILL_MINUTES", "inf"),  # history without end
    ("WINDOW_SECONDS", "0"),
])
def test_values_out_of_range_are_refused_naming_the_variable(monkeypatch, tmp_path, name, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()
