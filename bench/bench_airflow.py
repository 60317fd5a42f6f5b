"""Scheduled runs (issue 11): wall time of one `obslab_pipeline` run through the real Airflow
(scheduler, LocalExecutor, Papermill), with its parts, and the memory of Airflow's processes.

The lab: its own broker, data folder and Airflow on free ports (`obslab.schedule.server.start`, what
`make airflow` runs, with its kernel zygote), and (`--spark connect`, the default) the lab's one Spark:
its Spark Connect server on a free port (`SparkServer`, what `obslab spark start` runs, with its worker
zygote), started once before the runs, with SPARK_SERVER=sc://127.0.0.1:PORT in Airflow's environment
so the stream task is a client and starts no JVM; `--spark local` measures the old way (a Spark per
stream task). `--kernels usual` stops the kernel zygote (every kernel a new interpreter); `--kernels
both` alternates the two, zygote first. Each measured run is a DAG run triggered over the REST API with
`generate_seconds=300`: its `generate` task publishes the last 5 minutes of the `demo` scenario at
the demo's 10 events/s (3,000 events, what a 5-minute schedule finds), then `stream`, `detect` and
`narrate` process them (narrator `auto`: the embedded model). Reported per run: the DAG run's wall
time (start to end, from Airflow), the time it waited in the queue, and each task's time (from
`pipeline_runs`: papermill start to end, kernel start included), and each task's timeline: the wait
before Airflow queued it after the task before it ended, queued to running, the task process's start
(running to papermill's start), then inside papermill: preparing the notebook, the kernel's start
(to the first cell), the cells (the slowest three, numbered among the code cells), the kernel's
shutdown and writing the executed notebook (the notebook's papermill metadata).

Reference, measured in the same run and interleaved: the same three notebooks with the same
parameters, run by papermill directly (no Airflow), on a second lab folder and topic with the same
3,000 events: what Airflow adds on top of the notebooks.

Memory: every 0.5 s, RSS and PSS of Airflow's processes and all they started (see `Memory`), split
into Airflow's own processes and what the tasks run (notebook kernels, Spark's JVM); idle for 60 s
after the DAGs are parsed, and during each run.

    .venv/bin/python bench/bench_airflow.py [--runs 5] [--spark connect|local] [--no-reference]
                                            [--kernels zygote|usual|both] [--keep-runs DIR]
                                            [--idle-seconds 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_broker, free_port, isolated_settings, machine  # noqa: E402

from obslab.broker import LocalBroker  # noqa: E402
from obslab.generator.run import RunPlan, generate  # noqa: E402
from obslab.lab import Lab  # noqa: E402
from obslab import demo  # noqa: E402
from obslab.schedule import kernels, server  # noqa: E402
from obslab.schedule.tasks import KERNEL, NOTEBOOKS, declared_parameters, notebook_parameters  # noqa: E402
from obslab.store import Store  # noqa: E402
from obslab.stream.server import SparkServer  # noqa: E402

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


def notebook_times(path: str, began: datetime, finished: datetime) -> dict:
    """From an executed notebook's papermill metadata, given papermill's start and end around it:
    reading and parameterizing the notebook, the kernel's start (to the first cell), the cells (the
    slowest three by their position), the kernel's shutdown (papermill's end time comes after it) and
    writing the executed notebook, in seconds."""
    parse = datetime.fromisoformat
    nb = json.loads(Path(path).read_text())
    cells = [c["metadata"]["papermill"] for c in nb["cells"]
             if c["cell_type"] == "code" and c["metadata"].get("papermill", {}).get("start_time")]
    if not cells:
        return {}
    meta = nb["metadata"]["papermill"]
    start, end = parse(meta["start_time"]), parse(meta["end_time"])
    seconds = lambda a, b: round((b - a).total_seconds(), 1)  # noqa: E731
    slowest = sorted(range(len(cells)), key=lambda i: cells[i]["duration"] or 0, reverse=True)[:3]
    return {"prepare_s": seconds(began, start), "kernel_s": seconds(start, parse(cells[0]["start_time"])),
            "cells_s": round(sum(c["duration"] or 0 for c in cells), 1),
            "slowest_cells_s": {f"cell {i + 1}": round(cells[i]["duration"] or 0, 1) for i in slowest},
            "shutdown_s": seconds(parse(cells[-1]["end_time"]), end), "write_s": seconds(end, finished)}


def timeline(api: Api, settings, run_id: str) -> dict:
    """Where one DAG run's time went, task by task: the wait before Airflow queued it (after the task
    before it ended), queued to started (executor, supervisor), started to papermill's start (the task
    process: DAG parse, imports, the store), papermill (kernel start and cells), and papermill's end to
    the task's end."""
    parse = datetime.fromisoformat
    tis = {t["task_id"]: t for t in api.call("GET", f"/dags/obslab_pipeline/dagRuns/{run_id}/taskInstances")[
        "task_instances"]}
    rows = Store.from_settings(settings).query(
        "SELECT stage, started_at, finished_at, output_notebook FROM pipeline_runs WHERE dag_run_id = ?", [run_id])
    utc = lambda t: t if t.tzinfo else t.replace(tzinfo=timezone.utc)  # noqa: E731 (the store keeps UTC)
    papermill = {stage: (utc(began), utc(ended), out) for stage, began, ended, out in rows if ended}
    out, previous_end = {}, None
    for task in ("generate", "stream", "detect", "narrate"):
        ti = tis.get(task)
        if not ti or not ti.get("start_date"):
            continue
        queued, started, ended = (parse(ti[k]) if ti.get(k) else None for k in ("queued_when", "start_date", "end_date"))
        part = {"state": ti["state"], "try_number": ti.get("try_number")}
        if previous_end and queued:
            part["wait_to_queued_s"] = round((queued - previous_end).total_seconds(), 1)
        if queued:
            part["queued_to_start_s"] = round((started - queued).total_seconds(), 1)
        if task in papermill:
            began, finished, notebook = papermill[task]
            part["start_to_papermill_s"] = round((began - started).total_seconds(), 1)
            part["papermill_s"] = round((finished - began).total_seconds(), 1)
            part["papermill_to_end_s"] = round((ended - finished).total_seconds(), 1)
            part |= notebook_times(notebook, began, finished)
        out[task] = part
        previous_end = ended
    return out


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
            "timeline": timeline(api, settings, run_id), **memory.peak()}


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


def median_timeline(timelines: list[dict]) -> dict:
    """Each task's parts, the median over runs (numbers only)."""
    out = {}
    for task in ("generate", "stream", "detect", "narrate"):
        parts = [t[task] for t in timelines if task in t]
        keys = {k for p in parts for k, v in p.items() if isinstance(v, (int, float))}
        if parts:
            out[task] = {k: round(statistics.median(p[k] for p in parts if k in p), 1) for k in sorted(keys)}
    return out


@contextmanager
def spark_connect(settings):
    """The lab's Spark Connect server (`SparkServer`, what `obslab spark start` runs: the worker launcher,
    its zygote, the lab's Spark settings), started once before the runs and stopped after; yields its
    start time (None when SPARK_SERVER is not a server address)."""
    if not settings.spark_server.startswith("sc://"):
        yield None
        return
    began = time.monotonic()
    server = SparkServer(settings)
    server.start(wait=True)
    try:
        yield round(time.monotonic() - began, 1)
    finally:
        server.stop()


def use_zygote(settings, on: bool) -> list[int]:
    """Start or stop the lab's kernel zygote as the next run needs; returns the pids whose trees are measured."""
    zygote = kernels.socket_path(settings)
    running = any(p.running for p in demo.status(settings, ("airflow-kernels",)))
    if running and not on:
        demo.stop(settings, grace_s=10.0, broker=False, names=("airflow-kernels",))
    elif on and not running:
        demo.spawn(settings, "airflow-kernels", server.commands(settings)["airflow-kernels"], server.environment(settings))
    deadline = time.monotonic() + 120
    while on and not zygote.exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # warming up: a task arriving now would start its kernel the usual way
    return [p.pid for p in server.status(settings) if p.running]


def summarise(runs: list[dict], kind: str) -> dict:
    """Medians and peaks over the successful runs of one kind of kernel start."""
    med = statistics.median
    mine = [r for r in runs if r["kernels"] == kind]
    ok = [r for r in mine if r["state"] == "success"]
    if not ok:
        return {"kernels": kind, "runs": len(mine), "succeeded": 0}
    return {
        "kernels": kind, "runs": len(mine), "succeeded": len(ok),
        "median_wall_s": med(r["wall_s"] for r in ok), "min_wall_s": min(r["wall_s"] for r in ok),
        "max_wall_s": max(r["wall_s"] for r in ok), "wall_s": [r["wall_s"] for r in mine],
        "median_queued_s": med(r["queued_s"] for r in ok),
        "median_parts_s": {t: med(r["parts_s"].get(t, 0) for r in ok) for t in ("generate", "stream", "detect", "narrate")},
        "median_stream_detect_narrate_s": med(r["stream_detect_narrate_s"] for r in ok),
        "median_timeline_s": median_timeline([r["timeline"] for r in ok]),
        "run_memory_peak_mib": {key: max(r[key] for r in mine) for key in
                                ("airflow_rss_peak_mib", "airflow_pss_peak_mib", "with_tasks_rss_peak_mib",
                                 "with_tasks_pss_peak_mib")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")
    parser.add_argument("--spark", choices=("connect", "local"), default="connect",
                        help="connect: the lab's Spark Connect server, started once before the runs (SPARK_SERVER "
                             "in Airflow's environment); local: every stream task starts a Spark of its own")
    parser.add_argument("--no-reference", action="store_true", help="skip the papermill-alone reference runs")
    parser.add_argument("--keep-runs", type=Path, help="copy the executed notebooks (DATA_DIR/runs) here at the end")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="how long Airflow's idle memory is sampled")
    parser.add_argument("--kernels", choices=("zygote", "usual", "both"), default="zygote",
                        help="zygote: the tasks' kernels are forked by the lab's kernel zygote (obslab.schedule.kernels); "
                             "usual: each kernel starts as a new interpreter (the zygote stopped); both: runs alternate, "
                             "zygote first, and the summary has one part per kind")
    args = parser.parse_args()

    def make_settings(folder: Path):
        port = free_port()
        spark = ({"spark_server": f"sc://127.0.0.1:{port}", "spark_connect_port": port} if args.spark == "connect"
                 else {"spark_server": "local"})
        return isolated_settings(folder / "lab", scenario="demo", seed=42, events_per_second=10.0,
                                 backfill_minutes=0.0, airflow_port=free_port(), **spark)

    with bench_broker(make_settings) as (settings, _broker), spark_connect(settings) as spark_start_s:
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
            time.sleep(args.idle_seconds)
        api.call("PATCH", "/dags/obslab_pipeline", {"is_paused": False})
        # Unpausing starts a cron run (the latest interval) within a scheduler loop or two: let it
        # appear and end first, so no measured run waits behind it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not api.call("GET", "/dags/obslab_pipeline/dagRuns")["dag_runs"]:
            time.sleep(1)
        runs, refs = [], []
        try:
            for i in range(args.runs):
                wait_idle(api)
                kind = args.kernels if args.kernels != "both" else ("zygote", "usual")[i % 2]
                roots = use_zygote(settings, kind == "zygote")
                runs.append(airflow_run(api, settings, roots) | {"kernels": kind})
                print(json.dumps({"airflow": runs[-1]}), file=sys.stderr, flush=True)
                wait_idle(api)
                if args.no_reference:
                    continue
                out = reference.data_dir / "runs" / f"ref{i}"
                out.mkdir(parents=True, exist_ok=True)
                refs.append(reference_run(reference, out))
                print(json.dumps({"reference": refs[-1]}), file=sys.stderr, flush=True)
            cron = [r for r in api.call("GET", "/dags/obslab_pipeline/dagRuns")["dag_runs"]
                    if r["run_type"] == "scheduled" and r["end_date"]]
        finally:
            server.stop(settings)
            if args.keep_runs:
                shutil.copytree(settings.data_dir / "runs", args.keep_runs, dirs_exist_ok=True)
    med = statistics.median
    summary = summarise(runs, args.kernels if args.kernels != "both" else "zygote")
    if args.kernels == "both":
        usual = summarise(runs, "usual")
        summary["usual_kernels"] = usual
        summary["ratio_zygote_to_usual_wall"] = round(summary["median_wall_s"] / usual["median_wall_s"], 2)
    summary |= {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": machine(),
        "airflow_start_s": started_s, "spark": args.spark,
        "spark_server": settings.spark_server, "spark_connect_start_s": spark_start_s,
        "idle_memory": idle.peak(),
        "scheduled_runs_meanwhile": [{"wall_s": round((datetime.fromisoformat(r["end_date"]) -
                                                       datetime.fromisoformat(r["start_date"])).total_seconds(), 1),
                                      "state": r["state"]} for r in cron],
    }
    if refs:
        summary |= {"reference_median_stream_detect_narrate_s": med(r["stream_detect_narrate_s"] for r in refs),
                    "reference_median_parts_s": {t: med(r["parts_s"][t] for r in refs) for t in refs[0]["parts_s"]}}
        summary["ratio_stream_detect_narrate_to_reference"] = round(
            summary["median_stream_detect_narrate_s"] / summary["reference_median_stream_detect_narrate_s"], 2)
    print(json.dumps(summary, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
