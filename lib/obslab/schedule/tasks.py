"""Notebooks as Airflow tasks: which parameters a run passes, where the executed notebook is kept,
and the record of each run in the store.

    notebook_parameters(...)   the parameters one run passes: every parameter the notebook declares
                               that is a setting gets its effective value (environment and .env,
                               read when the task runs), a DAG run's non-null params win, and a
                               task's fixed values win over both
    skip_reason(...)           why a task has nothing to do in a run (a falsy parameter, a setting's value)
    output_path(...)           DATA_DIR/runs/<dag_id>/<run_id>/<task_id>.ipynb (a re-run overwrites it)
    NotebookOperator           the papermill provider's operator, run with code cells shown, in
                               notebooks/, with the obslab kernel (forked by the lab's kernel
                               zygote when it runs, see obslab.schedule.kernels; stopped at once
                               after the last cell); records the run in pipeline_runs
    setting_params(...)        DAG params built from the Settings fields (default None: the setting)

Nothing here reads settings or files when a DAG file is imported: that happens in `execute`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from obslab.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "obslab"
# Once its last cell has run the kernel is stopped at once (nbclient's "immediate"), not asked to shut
# down and waited for (1.5-3 s of interpreter teardown per task). Nothing is lost: every cell has
# returned, the store's writes are committed (DuckDB replays its WAL at the next open), the generator
# closes its producer in its own cell, and papermill writes the executed notebook from this side.
KERNEL_SHUTDOWN = "immediate"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+-]")


def notebook_path(name: str) -> Path:
    """notebooks/<name>.ipynb for a lab notebook's name; a path to an .ipynb file as it is."""
    return Path(name) if name.endswith(".ipynb") else NOTEBOOKS / f"{name}.ipynb"


def declared_parameters(notebook: Path) -> dict[str, dict]:
    """The parameters a notebook's `parameters` cell declares (papermill's own reading of it)."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def notebook_parameters(declared: set[str], settings: Settings, dag_params: dict[str, Any] | None = None,
                        fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings values for the declared parameters that are settings, then DAG params, then fixed values."""
    values = settings.model_dump(mode="json")
    params = {name: values[name] for name in sorted(declared) if name in values}
    params.update({k: v for k, v in (dag_params or {}).items() if v is not None and k in declared})
    params.update(fixed or {})
    return params


def skip_reason(settings: Settings, dag_params: dict[str, Any] | None, params: dict[str, Any],
                skip_unless: str | None = None, skip_if: dict[str, Any] | None = None) -> str | None:
    """Why a task has nothing to do, or None: its `skip_unless` parameter is falsy, or a setting in
    `skip_if` has that value in this run (the setting, or the run's param when set)."""
    if skip_unless and not params.get(skip_unless):
        return f"{skip_unless} is {params.get(skip_unless)!r}: nothing to do"
    effective = notebook_parameters(set(skip_if or ()), settings, dag_params)
    for name, value in (skip_if or {}).items():
        if effective.get(name) == value:
            return f"{name} is {value!r}: nothing to do"
    return None


def output_path(settings: Settings, dag_id: str, run_id: str, task_id: str) -> Path:
    """Where one task's executed notebook is kept."""
    return settings.data_dir / "runs" / dag_id / _UNSAFE.sub("_", run_id) / f"{task_id}.ipynb"


def setting_params(*names: str) -> dict:
    """DAG params for these settings: default None (the setting's effective value), the setting's help."""
    from airflow.sdk import Param

    out = {}
    for name in names:
        field = Settings.model_fields[name]
        out[name] = Param(None, type=["null", _json_type(field.annotation)],
                          description=f"{field.description} (empty: the {name.upper()} setting)")
    return out


def _json_type(annotation) -> str:
    text = str(annotation)
    if "float" in text:
        return "number"
    if "int" in text:
        return "integer"
    if "bool" in text:
        return "boolean"
    return "string"


def record(store, run_key: str, **columns) -> None:
    """Write (or update) one row of pipeline_runs."""
    store.upsert_row("pipeline_runs", {"run_id": run_key, **columns})


def __getattr__(name: str):
    # NotebookOperator is built on first use: its base class imports Airflow's papermill provider,
    # seconds of imports that the rest of this module (and its tests) never needs.
    if name == "NotebookOperator":
        globals()[name] = _notebook_operator()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _notebook_operator() -> type:
    from airflow.providers.papermill.operators.papermill import PapermillOperator

    class NotebookOperator(PapermillOperator):
        """Run one lab notebook as a task: parameters from settings and the DAG run, code kept visible.

        The provider's own `execute` runs papermill in report mode (every code cell hidden in the kept
        notebook) and in the worker's directory; learners read the kept notebook, and the notebooks
        open files relative to notebooks/, so this runs papermill itself with the same inputs.
        `skip_unless` names a parameter: when its effective value is falsy the task is skipped;
        `skip_if` maps settings to values: when one has its value in the run, the task is skipped.
        """

        template_fields = ()  # parameters are resolved in execute, not by Jinja

        def __init__(self, *, notebook: str, fixed: dict[str, Any] | None = None, skip_unless: str | None = None,
                     skip_if: dict[str, Any] | None = None, **kwargs) -> None:
            super().__init__(input_nb=str(notebook_path(notebook)), output_nb="(set when the task runs)",
                             kernel_name=KERNEL, log_output=True, **kwargs)
            self.notebook = notebook
            self.fixed = dict(fixed or {})
            self.skip_unless = skip_unless
            self.skip_if = dict(skip_if or {})

        def execute(self, context):
            import papermill
            from airflow.sdk.exceptions import AirflowSkipException

            from obslab.errors import NotebookTaskError
            from obslab.lab import Lab
            from obslab.schedule.kernels import manager_for, socket_path
            from obslab.settings import load_settings

            settings = load_settings()
            source = notebook_path(self.notebook)
            declared = set(declared_parameters(source))
            dag_params = dict(context.get("params") or {})
            params = notebook_parameters(declared, settings, dag_params, self.fixed)
            if reason := skip_reason(settings, dag_params, params, self.skip_unless, self.skip_if):
                raise AirflowSkipException(reason)
            dag_id, run_id = context["dag"].dag_id, context["run_id"]
            out = output_path(settings, dag_id, run_id, self.task_id)
            out.parent.mkdir(parents=True, exist_ok=True)
            store = Lab(settings).store
            key = f"{dag_id}/{run_id}/{self.task_id}"
            row = dict(stage=self.task_id, started_at=datetime.now(timezone.utc), dag_id=dag_id, dag_run_id=run_id,
                       notebook=str(source), output_notebook=str(out),
                       details=json.dumps({"parameters": params, "try_number": context["ti"].try_number}, default=str))
            record(store, key, **row, status="running")
            self.log.info("running %s with %s -> %s", source.name, params, out)
            try:
                papermill.execute_notebook(str(source), str(out), parameters=params, kernel_name=KERNEL,
                                           cwd=str(NOTEBOOKS), report_mode=False, progress_bar=False,
                                           log_output=True, shutdown_kernel=KERNEL_SHUTDOWN,
                                           kernel_manager_class=manager_for(socket_path(settings)))
            except BaseException as err:
                first = _first_line(err)
                record(store, key, **row, finished_at=datetime.now(timezone.utc), status="failed", error=first)
                if isinstance(err, papermill.PapermillExecutionError):
                    raise NotebookTaskError(self.notebook, out, err.exec_count, first) from err
                raise
            record(store, key, **row, finished_at=datetime.now(timezone.utc), status="ok")
            return str(out)
    NotebookOperator.__module__ = __name__  # pickled and named as obslab.schedule.tasks.NotebookOperator
    NotebookOperator.__qualname__ = "NotebookOperator"
    return NotebookOperator


def _first_line(err: BaseException) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    text = f"{ename}: {evalue}" if ename else (str(err) or type(err).__name__)
    return text.strip().splitlines()[0][:500] if text.strip() else type(err).__name__
