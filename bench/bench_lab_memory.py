"""The whole lab with Airflow switched on (issue 25): peak memory of all its processes.

One variant is what `make demo` and `make airflow` run now: the lab's one Spark (a Spark Connect
server), the demo's processes (broker, generator, stream, detector, narrator, dashboard) and Airflow
(API server, scheduler, DAG processor), in a temporary data folder on free ports. While the demo
runs, one `obslab_pipeline` run is triggered with `stream_source=spans` (it streams the empty spans
topic under its own checkpoint, so it does not collide with the demo's stream, then detects and
narrates on the demo's store): a DAG run whose stream task needs Spark, as every scheduled run does.

Reference, measured in the same invocation: the same with SPARK_SERVER=local, where the demo's stream
and every notebook that touches Spark start a Spark of their own (the design before the server).

Memory: every second, over every process whose environment has this lab's DATA_DIR (the demo's and
Airflow's processes and all they start: the JVMs, notebook kernels, the Spark server's Python
workers), the sums of RSS and of PSS (PSS splits pages shared between processes, so its sum is what
the lab really holds; RSS counts shared pages once per process). Reported: the peaks of both sums,
and the peak's split by component.

    .venv/bin/python bench/bench_lab_memory.py [--minutes 6] [--variants server,local] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, isolated_settings, machine  # noqa: E402

from obslab.schedule import server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def component(cmd: str) -> str:
    """Which part of the lab a process is, from its command line."""
    if "SparkConnectServer" in cmd:
        return "spark server (JVM)"
    if "obslab.schedule.kernels" in cmd:  # the zygote and the kernels forked from it share its command line
        return "kernel zygote and its kernels"
    if "obslab.stream.worker" in cmd:
        return "spark python workers (zygote and forks)"
    if "kafka.Kafka" in cmd:
        return "broker (JVM)"
    if cmd.split(" ")[0].endswith("java"):
        return "spark of a process (JVM)"
    if "pyspark" in cmd and "worker" in cmd:
        return "spark python workers"
    if "ipykernel" in cmd:
        return "notebook kernels"
    if "airflow" in cmd or "obslab.schedule" in cmd or "supervisor" in cmd:
        return "airflow"
    for name in ("stream", "detect", "narrate", "generate", "streamlit"):
        if name in cmd:
            return f"demo {name}"
    return "other"


class Sampler:
    """Every second: RSS and PSS summed over the processes of the lab whose DATA_DIR is `data`."""

    def __init__(self, data: Path):
        self.data, self.samples, self._stop = str(data), [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _members(self):
        import psutil

        for proc in psutil.process_iter():
            try:
                if proc.environ().get("DATA_DIR") == self.data:
                    yield proc
            except psutil.Error:
                continue

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(1.0):
            parts: dict[str, list[int]] = {}
            for proc in self._members():
                try:
                    mem = proc.memory_full_info()
                    cmd = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                rss_pss = parts.setdefault(component(cmd), [0, 0])
                rss_pss[0] += mem.rss
                rss_pss[1] += mem.pss
            self.samples.append(parts)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peaks(self) -> dict:
        def total(sample, i):
            return sum(v[i] for v in sample.values())

        out = {}
        for i, kind in enumerate(("rss", "pss")):
            top = max(self.samples, key=lambda sample: total(sample, i))
            out[f"peak_{kind}_mib"] = round(total(top, i) / MIB)
            out[f"at_peak_{kind}_by_component_mib"] = {k: round(v[i] / MIB) for k, v in
                                                       sorted(top.items(), key=lambda kv: -kv[1][i])}
        return out


def one_variant(spark: str, minutes: float) -> dict:
    from bench_airflow import Api

    data = Path(tempfile.mkdtemp(prefix=f"obslab-bench-memory-{spark}-"))
    settings = isolated_settings(data, spark_server="auto" if spark == "server" else "local",
                                 spark_connect_port=free_port(), airflow_port=free_port())
    env = {**os.environ, **server.environment(settings)}
    env.pop("AIRFLOW_HOME", None)
    env.pop("AIRFLOW_CONFIG", None)
    env["DUCKDB_PATH"] = ""
    began = time.monotonic()
    demo = subprocess.Popen([sys.executable, "-m", "obslab.cli", "demo", "--port", str(free_port()),
                             "--minutes", str(minutes + 5)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    result = {"variant": spark, "data_dir": str(data)}
    with Sampler(data) as sampler:
        try:
            subprocess.run([sys.executable, "-m", "obslab.cli", "airflow", "start"], env=env, check=True,
                           capture_output=True, text=True, timeout=600)
            api = Api(settings)
            deadline = time.monotonic() + 300
            while True:  # until the DAG processor has parsed the DAG (a first parse on a new machine takes a while)
                try:
                    api.call("PATCH", "/dags/obslab_pipeline", {"is_paused": False})
                    break
                except urllib.error.HTTPError as err:
                    if err.code != 404 or time.monotonic() > deadline:
                        raise
                    time.sleep(2)
            run = api.call("POST", "/dags/obslab_pipeline/dagRuns",
                           {"logical_date": None, "conf": {"stream_source": "spans"}})
            run_id = run["dag_run_id"]
            while True:
                state = api.call("GET", f"/dags/obslab_pipeline/dagRuns/{run_id}")["state"]
                if state in ("success", "failed"):
                    break
                time.sleep(2)
            result["pipeline_run"] = state
            while time.monotonic() - began < minutes * 60:
                time.sleep(2)
        finally:
            subprocess.run([sys.executable, "-m", "obslab.cli", "airflow", "stop"], env=env, capture_output=True,
                           timeout=300)
            demo.send_signal(signal.SIGINT)
            out, _ = demo.communicate(timeout=300)
    result["seconds"] = round(time.monotonic() - began)
    result["samples"] = len(sampler.samples)
    result["demo_output_tail"] = out[-300:]
    return {**result, **sampler.peaks()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--variants", default="server,local")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
           "machine": machine(), "minutes": args.minutes, "runs": []}
    for variant in args.variants.split(","):
        out["runs"].append(one_variant(variant, args.minutes))
        print(json.dumps(out["runs"][-1], indent=1), file=sys.stderr)
    path = ROOT / "bench" / "results" / f"lab-memory-{out['date'][:10]}.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1) if args.json else f"written to {path}")


if __name__ == "__main__":
    main()
