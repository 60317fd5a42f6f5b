"""Scheduled runs (issue 11): wall time of one `obslab_pipeline` run through the real Airflow
(scheduler, LocalExecutor, Papermill), with its parts, and the memory of Airflow's processes.

The lab: its own broker, data folder and Airflow on free ports (`obslab.schedule.server.start`, what
`make airflow` runs). Each measured run is a DAG run triggered over the REST API with
`generate_seconds=300`: its `generate` task publishes the last 5 minutes of the `demo` scenario at
the demo's 10 events/s (3,000 events, what a 5-minute schedule finds), then `stream`, `detect` and
`narrate` process them (narrator `auto`: the embedded model). Reported per run: the DAG run's wall
time (start to end, from Airflow), the time it waited in the queue, and each task's time (from
`pipeline_runs`: papermill start to end, kernel start included).

Reference, measured in the same run and interleaved: the same three notebooks with the same
parameters, run by papermill directly (no Airflow), on a second lab folder and topic with the same
3,000 events: what Airflow adds on top of the notebooks.

Memory: every 0.5 s, RSS and PSS of Airflow's processes and all they started (see `Memory`), split
into Airflow's own processes and what the tasks run (notebook kernels, Spark's JVM); idle for 60 s
after the DAGs are parsed, and during each run.

    .venv/bin/python bench/bench_airflow.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_broker, free_port, isolated_settings, machine  # noqa: E402

from obslab.broker import LocalBroker  # noqa: E402
from obslab.generator.run import RunPlan, generate  # noqa: E402
from obslab.lab import Lab  # noqa: E402
from obslab.schedule import server  # noqa: E402
from obslab.schedule.tasks import KERNEL, NOTEBOOKS, declared_parameters, notebook_parameters  # noqa: E402
from obslab.store import Store  # noqa: E402

GENERATE_SECONDS = 300
TASKS = ("02_stream_aggregate", "03_detect_anomalies", "04_narrate_incidents")


class Api:
    """The lab Airflow's REST API with a token from the generated password."""

    def __init__(self, settings):
        self.base = server.url(settings)
        body = json.dumps({"username": server.USER, "password": server.password(settings)}).encode()
        request = urllib.request.Request(f"{self.base}/auth/token", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            self.token = json.loads(response.read())["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(f"{self.base}/api/v2{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


class Memory:
    """Samples the memory of Airflow's processes and everything they started, in a thread.

    The tree is walked from the three Airflow processes by parent (notebook kernels start in a
    session of their own, so process groups would miss them). Split: Airflow's own processes (API
    server, scheduler and its executor workers, DAG processor, task supervisors) and what the tasks
    run (notebook kernels, Spark's JVM). RSS counts pages shared by forked processes once per
    process; PSS splits them, so the PSS sum is the memory the tree really holds.
    """

    def __init__(self, roots: list[int]):
        self.roots, self.samples, self._stop = roots, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self):
        import psutil

        for root in self.roots:
            try:
                parent = psutil.Process(root)
                yield from (parent, *parent.children(recursive=True))
            except psutil.Error:
                continue

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            sample = {"own_rss": 0, "own_pss": 0, "tasks_rss": 0, "tasks_pss": 0}
            for proc in self._tree():
                try:
                    cmd = " ".join(proc.cmdline())
                    mem = proc.memory_full_info()
                except psutil.Error:
                    continue
                side = "tasks" if ("ipykernel" in cmd or cmd.split(" ")[0].endswith("java")) else "own"
                sample[f"{side}_rss"] += mem.rss
                sample[f"{side}_pss"] += mem.pss
            self.samples.append(sample)

    def __enter__(self) -> "Memory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self) -> dict:
        mib = 1024 * 1024
        if not self.samples:
            return {}
        out = {}
        for kind in ("rss", "pss"):
            own = [x[f"own_{kind}"] for x in self.samples]
            both = [x[f"own_{kind}"] + x[f"tasks_{kind}"] for x in self.samples]
            out |= {f"airflow_{kind}_peak_mib": round(max(own) / mib),
                    f"airflow_{kind}_median_mib": round(statistics.median(own) / mib),
                    f"with_tasks_{kind}_peak_mib": round(max(both) / mib)}
        return out


def wait_idle(api: Api, timeout_s: float = 900) -> None:
    """Until no run of the pipeline is queued or running (a cron run may have started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = api.call("GET", "/dags/obslab_pipeline/dagRuns?state=queued&state=running")["dag_runs"]
        if not runs:
            return
        time.sleep(2)
    raise TimeoutError("a pipeline run did not finish")


def airflow_run(api: Api, settings, roots: list[int]) -> dict:
    """Trigger one pipeline run with 5 minutes of traffic; its times, parts and memory."""
    run = api.call("POST", "/dags/obslab_pipeline/dagRuns",
                   {"logical_date": None, "conf": {"generate_seconds": GENERATE_SECONDS}})
    run_id = run["dag_run_id"]
    with Memory(roots) as memory:
        while True:
            state = api.call("GET", f"/dags/obslab_pipeline/dagRuns/{run_id}")
            if state["state"] in ("success", "failed"):
                break
            time.sleep(1)
    parse = datetime.fromisoformat
    rows = Store.from_settings(settings).query(
        "SELECT stage, epoch(finished_at) - epoch(started_at) FROM pipeline_runs WHERE dag_run_id = ?", [run_id])
    parts = {stage: round(seconds, 1) for stage, seconds in rows}
    return {"run_id": run_id, "state": state["state"],
            "wall_s": round((parse(state["end_date"]) - parse(state["start_date"])).total_seconds(), 1),
            "queued_s": round((parse(state["start_date"]) - parse(state["queued_at"])).total_seconds(), 1),
            "parts_s": parts, "stream_detect_narrate_s": round(sum(parts.get(t, 0) for t in
                                                                   ("stream", "detect", "narrate")), 1),
            **memory.peak()}


def reference_run(settings, out_dir: Path) -> dict:
    """The same three notebooks with the same parameters, by papermill directly (no Airflow)."""
    import papermill

    with Lab(settings) as lab:
        generate(RunPlan.ending_now(GENERATE_SECONDS), settings, store=lab.store, sink=lab.events)
    parts = {}
    for name in TASKS:
        source = NOTEBOOKS / f"{name}.ipynb"
        params = notebook_parameters(set(declared_parameters(source)), settings, fixed=(
            {"generate_seconds": 0} if name.startswith("02") else {}))
        began = time.monotonic()
        papermill.execute_notebook(str(source), str(out_dir / f"{name}.ipynb"), parameters=params,
                                   kernel_name=KERNEL, cwd=str(NOTEBOOKS), report_mode=False, progress_bar=False)
        parts[name.split("_")[1]] = round(time.monotonic() - began, 1)
    return {"parts_s": parts, "stream_detect_narrate_s": round(sum(parts.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")
    args = parser.parse_args()

    def make_settings(folder: Path):
        return isolated_settings(folder / "lab", scenario="demo", seed=42, events_per_second=10.0,
                                 backfill_minutes=0.0, airflow_port=free_port())

    with bench_broker(make_settings) as (settings, _broker):
        reference = settings.model_copy(update={"data_dir": settings.data_dir.parent / "reference",
                                                "duckdb_path": settings.data_dir.parent / "reference" / "observability.duckdb",
                                                "topic_raw_events": "reference_raw"})
        LocalBroker(reference).ensure_topics()
        began = time.monotonic()
        print(server.start(settings), file=sys.stderr)
        started_s = round(time.monotonic() - began, 1)
        # The reference's notebook kernels read their lab from the environment (Airflow has its own).
        os.environ.update({k: v for k, v in server.environment(reference).items() if not k.startswith("AIRFLOW")})
        roots = [p.pid for p in server.status(settings)]
        api = Api(settings)
        while len(api.call("GET", "/dags")["dags"]) < 3:
            time.sleep(2)
        with Memory(roots) as idle:
            time.sleep(60)
        api.call("PATCH", "/dags/obslab_pipeline", {"is_paused": False})
        runs, refs = [], []
        try:
            for i in range(args.runs):
                wait_idle(api)
                runs.append(airflow_run(api, settings, roots))
                print(json.dumps({"airflow": runs[-1]}), file=sys.stderr, flush=True)
                wait_idle(api)
                out = reference.data_dir / "runs" / f"ref{i}"
                out.mkdir(parents=True, exist_ok=True)
                refs.append(reference_run(reference, out))
                print(json.dumps({"reference": refs[-1]}), file=sys.stderr, flush=True)
            cron = [r for r in api.call("GET", "/dags/obslab_pipeline/dagRuns")["dag_runs"]
                    if r["run_type"] == "scheduled" and r["end_date"]]
        finally:
            server.stop(settings)
    med = statistics.median
    ok = [r for r in runs if r["state"] == "success"]
    summary = {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": machine(),
        "runs": len(runs), "succeeded": len(ok), "airflow_start_s": started_s,
        "median_wall_s": med(r["wall_s"] for r in ok), "min_wall_s": min(r["wall_s"] for r in ok),
        "max_wall_s": max(r["wall_s"] for r in ok), "median_queued_s": med(r["queued_s"] for r in ok),
        "median_parts_s": {t: med(r["parts_s"].get(t, 0) for r in ok) for t in ("generate", "stream", "detect", "narrate")},
        "median_stream_detect_narrate_s": med(r["stream_detect_narrate_s"] for r in ok),
        "reference_median_stream_detect_narrate_s": med(r["stream_detect_narrate_s"] for r in refs),
        "reference_median_parts_s": {t: med(r["parts_s"][t] for r in refs) for t in refs[0]["parts_s"]},
        "idle_memory": idle.peak(),
        "run_memory_peak_mib": {key: max(r[key] for r in runs) for key in
                                ("airflow_rss_peak_mib", "airflow_pss_peak_mib", "with_tasks_rss_peak_mib",
                                 "with_tasks_pss_peak_mib")},
        "scheduled_runs_meanwhile": [{"wall_s": round((datetime.fromisoformat(r["end_date"]) -
                                                       datetime.fromisoformat(r["start_date"])).total_seconds(), 1),
                                      "state": r["state"]} for r in cron],
    }
    summary["ratio_stream_detect_narrate_to_reference"] = round(
        summary["median_stream_detect_narrate_s"] / summary["reference_median_stream_detect_narrate_s"], 2)
    print(json.dumps(summary, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
