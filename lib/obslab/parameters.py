"""Notebook parameters, checked before a notebook's first step (papermill, Airflow and a hand edit alike).

    declared(notebook)                 name -> (type, default) of the notebook's `parameters` cell
    check_parameters(notebook, values) every declared parameter against its type and its rule (RULES), or
                                       NotebookParameterError naming the parameter, its value and what to pass

A notebook calls it in its first code cell: `check_parameters("03_detect_anomalies", globals())`. A bad value
then stops the notebook at once with one sentence, instead of a traceback from deep inside a later step.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from obslab.errors import ConfigError, NotebookParameterError

# Durations are added to "now" and to event times: a year bounds them far below datetime's limit (year 9999),
# and bounds the work a typo like 1e9 would ask for.
YEAR_SECONDS = 366 * 86_400
RATE_MAX = 1_000_000.0  # events a second: the generator builds each event in Python
COUNT_MAX = 2 ** 63 - 1  # the store's BIGINT


def _number(low: float, high: float, low_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: (low < v if low_open else low <= v) and v <= high


def _choice(*allowed: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in allowed), "one of " + ", ".join(allowed)


def _iso_start(value: str) -> bool:
    if value == "":
        return True
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def _scenario(value: str) -> bool:
    from obslab.generator.scenario import available_scenarios

    try:
        return value in available_scenarios() or Path(value).suffix in (".yaml", ".yml") or Path(value).is_file()
    except (OSError, ValueError):  # a name too long for the file system, say
        return False


# parameter -> (accepts a value of the declared type, what the value must be). One rule per name: a name means
# the same in every notebook (a setting's bounds are the setting's, see obslab.settings), except where a notebook
# gives a value a meaning of its own (OVERRIDES).
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "check_broker": (lambda v: True, "true or false"),
    "scenario": (_scenario, "a shipped scenario (see obslab.generator.scenario.available_scenarios()) or a YAML path"),
    "seed": (_number(0, COUNT_MAX), f"a whole number from 0 to {COUNT_MAX}"),
    "generate_start": (_iso_start, "empty (end now) or an ISO-8601 time with a timezone, like 2026-01-05T09:00:00Z"),
    "generate_seconds": (_number(0, YEAR_SECONDS), f"from 0 to {YEAR_SECONDS} seconds (0: generate nothing)"),
    "events_per_second": (_number(0, RATE_MAX, low_open=True), f"more than 0 and at most {RATE_MAX:,.0f}"),
    "generate_to": _choice("file", "kafka"),
    "store_truth": (lambda v: True, "true or false"),
    "output_file": (lambda v: v.strip() != "", "a non-empty file path (relative to DATA_DIR)"),
    "trigger_seconds": (_number(0, YEAR_SECONDS, low_open=True), f"more than 0 and at most {YEAR_SECONDS} seconds"),
    "window_seconds": (_number(1, 86_400), "from 1 to 86400 seconds (WINDOW_SECONDS)"),
    "watermark_seconds": (_number(0, 86_400), "from 0 to 86400 seconds (WATERMARK_SECONDS)"),
    "run_for_seconds": (_number(0, YEAR_SECONDS, low_open=True), f"more than 0 and at most {YEAR_SECONDS} seconds"),
    "checkpoint_name": (lambda v: re.fullmatch(r"[A-Za-z0-9_.-]+", v) is not None,
                        "a folder name of letters, digits, _ . and - (CHECKPOINT_NAME)"),
    "stream_source": _choice("events", "spans"),
    "available_now": (lambda v: True, "true or false"),
    "send_late_event": (lambda v: True, "true or false"),
    "source": _choice("replay", "store"),
    "minutes": (_number(0, YEAR_SECONDS / 60), f"from 0 to {YEAR_SECONDS // 60} minutes (0: the scenario's length)"),
    "error_surge_factor": (_number(1, 1e6, low_open=True), "more than 1 (a multiple of the usual error odds)"),
    "latency_spike_factor": (_number(1, 1e6, low_open=True), "more than 1 (a multiple of the SLA)"),
    "shift_z": (_number(0, 1e6, low_open=True), "more than 0 (standard deviations)"),
    "detect_lookback_minutes": (_number(5, YEAR_SECONDS // 60), f"from 5 to {YEAR_SECONDS // 60} minutes"),
    "continuous_seconds": (_number(0, YEAR_SECONDS), f"from 0 to {YEAR_SECONDS} seconds (0: one run)"),
    "chart_service": (lambda v: True, "a service name, or empty"),
    "narrator_backend": _choice("auto", "ollama", "llamacpp", "template"),
    "ollama_model": (lambda v: v.strip() != "", "a non-empty Ollama model name"),
    "narrate_max_incidents": (_number(1, 1_000_000), "from 1 to 1000000"),
    "narrate_temperature": (_number(0, 2), "from 0 to 2"),
    "service": (lambda v: v.strip() != "", "a non-empty service name"),
    "fault_id": (lambda v: v == "" or re.fullmatch(r"f\d{3,}", v) is not None, "empty or a fault id like f000"),
    "aggregator": _choice("duckdb", "spark"),
    "health_max_lag_events": (_number(0, COUNT_MAX), f"a whole number from 0 to {COUNT_MAX}"),
    "health_max_freshness_seconds": (_number(0, YEAR_SECONDS, low_open=True), f"more than 0 and at most {YEAR_SECONDS}"),
    "health_max_dead_letter_rate": (_number(0, 1), "from 0 to 1"),
    "health_max_stage_age_seconds": (_number(0, YEAR_SECONDS, low_open=True), f"more than 0 and at most {YEAR_SECONDS}"),
    "retention_days": (_number(1, 36_600), "from 1 to 36600 days"),
}
# (notebook, parameter) -> rule, where the notebook gives a value a meaning of its own.
OVERRIDES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("06_evaluate_detection", "events_per_second"): (_number(0, RATE_MAX), f"from 0 (the scenario's rate) to {RATE_MAX:,.0f}"),
}
# Declared type -> (is a value of it, what it must be). A bool is no number here, and a number is finite.
TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    "str": (lambda v: isinstance(v, str) and "\x00" not in v, "text"),
}
# Parameters Airflow fills from a setting that may be unset (None): None means "the setting's default" there.
NONE_MEANS_DEFAULT = {"generate_start", "events_per_second"}


@lru_cache(maxsize=32)
def declared(notebook: str) -> dict[str, tuple[str, Any]]:
    """name -> (type name, default) of the parameters a notebook's `parameters` cell declares."""
    from obslab.schedule.tasks import notebook_path

    path = notebook_path(notebook)
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"cannot read the notebook {path} ({err}): give a lab notebook's name, "
                          "like 03_detect_anomalies") from None
    source = next(("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), "")
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = (ast.unparse(node.annotation), ast.literal_eval(node.value))
    return out


def check_parameters(notebook: str, values: Mapping[str, Any]) -> None:
    """Check every parameter `notebook` declares, as found in `values` (a notebook passes its globals());
    raises NotebookParameterError for the first that its type or its rule refuses."""
    for name, (type_name, default) in declared(notebook).items():
        value = values.get(name, default)
        if value is None and name in NONE_MEANS_DEFAULT:
            continue
        is_type, type_text = TYPES.get(type_name, (lambda v: True, type_name))
        accepts, expected = OVERRIDES.get((notebook, name)) or RULES.get(name, (lambda v: True, type_text))
        if not is_type(value):
            raise NotebookParameterError(notebook, name, value, f"{type_text}: {expected}", default)
        if not accepts(value):
            raise NotebookParameterError(notebook, name, value, expected, default)
