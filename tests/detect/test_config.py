"""DetectorConfig (obslab.detect.config): its thresholds are the settings' defaults, a changed setting
reaches the detectors (obslab.detect.run.config_from), and the detectors read their thresholds from it."""

import pytest

from obslab.detect.config import DetectorConfig
from obslab.detect.errors import error_surge
from tests.detect.helpers import CFG, windows


def test_thresholds_come_from_the_config():
    series = windows(at={30: {"errors": 30}})  # 15 % of 200: a surge at k = 3, not at k = 10 (about 17 %)
    assert [a.window_start.minute for a in error_surge(series, CFG)] == [30]
    assert error_surge(series, DetectorConfig(error_surge_factor=10)) == []


# DetectorConfig field -> the setting that holds its default (a new tunable threshold needs a row)
FROM_SETTINGS = {
    "error_surge_factor": "error_surge_factor", "error_confidence_z": "error_confidence_z",
    "latency_spike_factor": "latency_spike_factor", "shift_z": "shift_z",
    "trend_windows": "detect_trend_windows", "default_slo_availability": "slo_default_availability",
    "burn_threshold": "burn_threshold", "min_partial_requests": "partial_window_min_requests",
}


def _clean_env(monkeypatch):
    from obslab.settings import settings_table

    for name, _, _ in settings_table():
        monkeypatch.delenv(name, raising=False)


def test_detector_defaults_are_the_settings_defaults_and_config_from_maps_them(monkeypatch):
    from dataclasses import fields

    from obslab.detect.run import config_from
    from obslab.settings import Settings, load_settings

    _clean_env(monkeypatch)
    settings = load_settings(_env_file=None)
    from_settings = config_from(settings)
    for name, setting in FROM_SETTINGS.items():
        assert getattr(CFG, name) == getattr(settings, setting) == Settings.model_fields[setting].default, name
    # the tests' DetectorConfig() and the one a detection run builds agree on every field
    assert {f.name: getattr(from_settings, f.name) for f in fields(DetectorConfig)} == {
        f.name: getattr(CFG, f.name) for f in fields(DetectorConfig)}


@pytest.mark.parametrize("env, field_name, expected", [
    ({"ERROR_SURGE_FACTOR": "7"}, "error_surge_factor", 7.0),  # a setting changes the threshold, no code edit
    ({"DETECT_TREND_WINDOWS": "24"}, "trend_windows", 24),  # the setting's name differs from the field's
    ({"SLO_DEFAULT_AVAILABILITY": "0.995"}, "default_slo_availability", 0.995),
    ({"PARTIAL_WINDOW_MIN_REQUESTS": "0"}, "min_partial_requests", DetectorConfig.NEVER),  # 0: final windows only
])
def test_a_changed_setting_reaches_the_detectors(monkeypatch, env, field_name, expected):
    from obslab.detect.run import config_from
    from obslab.settings import load_settings

    _clean_env(monkeypatch)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert getattr(config_from(load_settings(_env_file=None)), field_name) == expected
