"""Which parameters a scheduled notebook run passes, and where its executed notebook is kept."""

from pathlib import Path

import pytest

from obslab.schedule.tasks import notebook_parameters, notebook_path, output_path, setting_params
from obslab.settings import load_settings


@pytest.fixture()
def settings(tmp_path):
    return load_settings(data_dir=tmp_path, window_seconds=30, scenario="mixed")


DECLARED = {"window_seconds", "scenario", "seed", "available_now"}  # available_now: a notebook control, no setting


@pytest.mark.parametrize("dag_params, fixed, expected", [
    # nothing from the run: every declared setting with its effective value (window 30 from settings)
    ({}, {}, {"window_seconds": 30, "scenario": "mixed", "seed": 42}),
    # a run's value wins over the setting
    ({"seed": 7}, {}, {"window_seconds": 30, "scenario": "mixed", "seed": 7}),
    # None in a run means "the setting", not "None"
    ({"seed": None}, {}, {"window_seconds": 30, "scenario": "mixed", "seed": 42}),
    # a run's param the notebook does not declare is not passed (papermill would add it blindly)
    ({"retention_days": 3}, {}, {"window_seconds": 30, "scenario": "mixed", "seed": 42}),
    # a task's fixed value wins over the run and the settings
    ({"scenario": "clean"}, {"scenario": "demo"}, {"window_seconds": 30, "scenario": "demo", "seed": 42}),
])
def test_parameters_come_from_settings_then_the_run_then_the_task(settings, dag_params, fixed, expected):
    assert notebook_parameters(DECLARED, settings, dag_params, fixed) == expected


def test_a_runs_executed_notebook_has_one_place_per_dag_run_and_task(settings):
    path = output_path(settings, "obslab_pipeline", "manual__2026-11-28T08:15:40+00:00", "stream")
    assert path == settings.data_dir / "runs" / "obslab_pipeline" / "manual__2026-11-28T08:15:40+00:00" / "stream.ipynb"
    # a '/' in a run id must not open another folder level
    assert output_path(settings, "d", "a/b", "t").parent.name == "a_b"


def test_notebook_names_and_paths():
    assert notebook_path("03_detect_anomalies").is_file()
    assert notebook_path("/tmp/x/boom.ipynb") == Path("/tmp/x/boom.ipynb")


def test_dag_params_default_to_the_setting_and_carry_its_help():
    params = setting_params("retention_days", "health_max_dead_letter_rate", "scenario")
    assert {name: p.value for name, p in params.items()} == dict.fromkeys(params)  # all None: the setting
    assert params["retention_days"].schema["type"] == ["null", "integer"]
    assert params["health_max_dead_letter_rate"].schema["type"] == ["null", "number"]
    assert params["scenario"].schema["type"] == ["null", "string"]
    assert "RETENTION_DAYS" in params["retention_days"].description
