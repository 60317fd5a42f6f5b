"""What the exercise checks share: the real generator's events in windows, a real store, the learner's module.

A check never trusts the learner's code to be well behaved: it loads the file the learner edits
by path, and any exception it raises becomes one readable problem (file, line, message), not a
stack trace.

    scenario YAML --EventStream (simulated time, one tick per window)--> events
      --`aggregate` (the stream's rules: errors are status >= 400, one row per window)--> Window rows
      --`store_with`--> service_metrics, endpoint_metrics, status_counts of a fresh DuckDB store

The aggregation here is exact (numpy percentiles), where the stream's percentiles come from
histograms: close enough for a check, and no Spark to wait for.
"""

from __future__ import annotations

import importlib.util
import linecache
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)  # a Monday, on a window boundary


@dataclass
class Result:
    """What a check found: problems (empty: solved) and notes shown either way."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def need(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok


class LearnerError(Exception):
    """The learner's code raised, or is missing something the exercise asks for."""


def load_module(path: Path, name: str):
    """The learner's file as a module, loaded by path (nothing of the library imports it)."""
    if not path.is_file():
        raise LearnerError(f"{path} is missing: restore it with `git checkout -- {path.name}` in its folder")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any failure is the learner's to fix, shown briefly
        raise LearnerError(f"loading {path.name} failed: {where(err, path)}") from None
    return module


def call(path: Path, fn, *args):
    """fn(*args), with an exception raised in the learner's file reported as one line."""
    try:
        return fn(*args)
    except LearnerError:
        raise
    except Exception as err:  # noqa: BLE001
        raise LearnerError(f"your code raised {where(err, path)}") from None


def where(err: BaseException, path: Path) -> str:
    """`TypeError: ... (detector.py line 12: <source>)`: the innermost frame in the learner's file."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    text = f"{type(err).__name__}: {err}"
    if frames:
        f = frames[-1]
        source = (f.line or linecache.getline(f.filename, f.lineno)).strip()
        text += f" ({path.name} line {f.lineno}: {source})"
    return text


def innermost(err: BaseException, root: Path) -> str:
    """`NameError: ... (lib/obslab/generator/events.py line 350: <source>)`: where in `root` it went wrong."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, SyntaxError) and err.filename:
        return text
    inside = [f for f in traceback.extract_tb(err.__traceback__)
              if Path(f.filename).resolve().is_relative_to(root.resolve())]
    if inside:
        f = inside[-1]
        shown = Path(f.filename).resolve().relative_to(root.resolve())
        text += f" ({shown} line {f.lineno}: {(f.line or '').strip()})"
    return text


def use_tree(root: Path) -> None:
    """Import obslab from `root`/lib (the tree being checked) before anything imports it."""
    lib = str((root / "lib").resolve())
    if "obslab" in sys.modules:
        loaded = Path(sys.modules["obslab"].__file__).resolve().parents[1]
        if loaded != Path(lib):
            raise RuntimeError(f"obslab is already imported from {loaded}; check {root} in a fresh process")
        return
    sys.path.insert(0, lib)


# ---------------------------------------------------------------------------- generated windows


def scenario(text: str):
    from obslab.generator.scenario import parse_scenario

    return parse_scenario(text, "the exercise's scenario")


def generate(plan, seed: int, minutes: float, window_seconds: int = 60):
    """The events of `minutes` of a scenario, one EventBatch per window, and the faults that ran."""
    from obslab.generator.events import EventStream

    stream = EventStream(plan, seed, START)
    batches, faults = [], {}
    for k in range(int(minutes * 60 // window_seconds)):
        batch = stream.tick(START + timedelta(seconds=k * window_seconds), window_seconds)
        batches.append(batch)
        faults.update({f.fault_id: f for f in batch.started})
    return batches, list(faults.values())


def aggregate(batches, window_seconds: int = 60) -> dict[str, list[dict]]:
    """Rows of service_metrics, endpoint_metrics and status_counts for the events of `batches`
    (every window final, as after the watermark passed)."""
    import numpy as np

    out = {"service_metrics": [], "endpoint_metrics": [], "status_counts": []}
    for batch in batches:
        if not len(batch):
            continue
        start = datetime.fromtimestamp(int(batch.times_ms[0]) // (window_seconds * 1000) * window_seconds,
                                       timezone.utc)
        end = start + timedelta(seconds=window_seconds)
        services = np.array(batch.services())
        paths = np.array([batch.endpoints[i][1] for i in batch.endpoint_index.tolist()])
        for service in sorted(set(services.tolist())):
            mine = services == service
            out["service_metrics"].append(_row(service, None, start, end, batch.latency_ms[mine],
                                               batch.status_code[mine]))
            for path in sorted(set(paths[mine].tolist())):
                hit = mine & (paths == path)
                out["endpoint_metrics"].append(_row(service, path, start, end, batch.latency_ms[hit],
                                                    batch.status_code[hit]))
                codes, counts = np.unique(batch.status_code[hit][batch.status_code[hit] >= 400], return_counts=True)
                out["status_counts"] += [{"service": service, "endpoint": path, "window_start": start,
                                          "status_code": int(c), "count": int(n)} for c, n in zip(codes, counts)]
    return out


def _row(service, endpoint, start, end, latency, codes) -> dict:
    import numpy as np

    n, errors = len(latency), int((codes >= 400).sum())
    p50, p95, p99 = (float(x) for x in np.percentile(latency, [50, 95, 99]))
    row = {"service": service, "window_start": start, "window_end": end, "request_count": n,
           "error_count": errors, "error_rate": errors / n, "avg_latency_ms": float(latency.mean()),
           "p50_latency_ms": p50, "p95_latency_ms": p95, "p99_latency_ms": p99, "is_final": True,
           "updated_at": end}
    if endpoint is not None:
        row |= {"endpoint": endpoint, "latency_sum_ms": float(latency.sum())}
    return row


def series(rows: list[dict], service: str) -> list:
    """A service's windows as the detectors see them (obslab.detect.detectors.Window)."""
    from obslab.detect.detectors import Window

    return [Window(r["service"], None, r["window_start"], r["window_end"], r["request_count"], r["error_count"],
                   r["avg_latency_ms"], r["p99_latency_ms"], r["is_final"], r["p50_latency_ms"])
            for r in rows if r["service"] == service]


def store_with(path: Path, tables: dict[str, list[dict]], plan=None):
    """A fresh, migrated store holding these rows (and the scenario's service catalogue)."""
    from obslab.generator.truth import catalog_rows
    from obslab.store import Store

    store = Store(path)
    store.migrate()
    batches = dict(tables)
    if plan is not None:
        batches["service_catalog"] = catalog_rows(plan.service_profiles(), plan.name, START)
    store.upsert_many(batches)
    return store
