"""The light set-up (issue 24): from a fresh clone to "Not yet: exercise 2 has 3 thing(s) to fix".

Each run: `git clone` of this checkout's HEAD into a temporary folder, with uv's cache in a new
temporary folder too (UV_CACHE_DIR: every wheel is downloaded from PyPI, as on a participant's
laptop), then, timed one after the other, `make exercises` and `make check-exercise all`. Reported per
run: both wall times and their sum, the disk the clone's .venv takes (du), uv's cache, and the peak
disk of the two together (du counts the files uv hard-links from its cache into the venv once), and
the peak resident memory of any one process (/usr/bin/time's %M, the largest child).

Reference, measured once in the same invocation with a cold cache of its own: the full set-up's
packages, `uv pip install -r requirements.lock` into a new venv, llama-cpp-python left out (it has no
wheel and is compiled from source: ~5 min on 2 cores by itself; pyspark, an sdist of pure Python, is
built as `make setup` builds it). This is a lower bound of `make setup`'s deps step, which also
compiles llama-cpp-python, and then fetches the Kafka and Spark jars and assembles the model:
repeating a whole cold `make setup` is too slow for this benchmark.

    .venv/bin/python bench/bench_exercises_setup.py [--runs 3] [--no-reference] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
EXPECTED = "exercise 2: not yet, 3 thing(s) to fix"  # what the starting point of exercise 2 gives
MiB = 2**20


def du_mib(*paths: Path) -> float:
    """Disk used by the paths together (blocks, hard links counted once), in MiB."""
    out = subprocess.run(["du", "-sck", *map(str, paths)], capture_output=True, text=True, check=True).stdout
    return round(int(out.strip().splitlines()[-1].split()[0]) / 1024, 1)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, int, str]:
    """(wall seconds, exit status, peak RSS in KiB of the largest process, output) of one command."""
    t0 = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "PEAK_RSS_KIB=%M", *cmd], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - t0
    peak = re.findall(r"PEAK_RSS_KIB=(\d+)", proc.stderr)
    return wall, proc.returncode, int(peak[-1]) if peak else 0, proc.stdout + proc.stderr


def clean_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")
           and not k.startswith(("OBSLAB_", "UV_"))}
    env["UV_CACHE_DIR"] = str(cache)
    return env


def light_run(head: str) -> dict:
    """One fresh clone, cold cache: make exercises, then make check-exercise all."""
    with tempfile.TemporaryDirectory(prefix="obslab-bench-light-") as tmp:
        clone, cache = Path(tmp) / "obslab", Path(tmp) / "uv-cache"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
        env = clean_env(cache)
        setup_s, setup_rc, setup_peak, setup_out = timed(["make", "exercises"], clone, env)
        if setup_rc != 0:
            raise SystemExit(f"make exercises failed ({setup_rc}):\n{setup_out[-3000:]}")
        venv_mib, cache_mib = du_mib(clone / ".venv"), du_mib(cache)
        both_mib = du_mib(clone / ".venv", cache)
        check_s, check_rc, check_peak, check_out = timed(["make", "check-exercise", "all"], clone, env)
        if EXPECTED not in check_out:
            raise SystemExit(f"make check-exercise all did not say {EXPECTED!r}:\n{check_out[-3000:]}")
        polled = [line for line in check_out.splitlines() if re.match(r"exercise \d: ", line)]
        return {"make_exercises_s": round(setup_s, 1), "check_exercise_all_s": round(check_s, 1),
                "total_s": round(setup_s + check_s, 1), "check_exit_status": check_rc, "poll": polled,
                "venv_mib": venv_mib, "uv_cache_mib": cache_mib, "peak_disk_venv_and_cache_mib": both_mib,
                "peak_rss_mib": round(max(setup_peak, check_peak) / 1024, 1),
                "pyspark_installed": any((clone / ".venv" / "lib").glob("python3*/site-packages/pyspark"))}


def reference_run() -> dict:
    """The full lock's packages but llama-cpp-python (compiled from source), cold cache."""
    uv = ROOT / ".venv" / "bin" / "uv"
    with tempfile.TemporaryDirectory(prefix="obslab-bench-full-") as tmp:
        venv, cache = Path(tmp) / "venv", Path(tmp) / "uv-cache"
        lock = Path(tmp) / "requirements-wheels.lock"
        lock.write_text("".join(line + "\n" for line in (ROOT / "requirements.lock").read_text().splitlines()
                                if not line.startswith("llama-cpp-python==")))
        env = clean_env(cache)
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        wall, rc, peak, out = timed([str(uv), "pip", "install", "--python", str(venv / "bin" / "python"),
                                     "-r", str(lock)], ROOT, env)
        if rc != 0:
            raise SystemExit(f"the reference install failed ({rc}):\n{out[-3000:]}")
        return {"what": "uv pip install -r requirements.lock without llama-cpp-python, cold cache, new venv",
                "install_s": round(wall, 1), "venv_mib": du_mib(venv), "uv_cache_mib": du_mib(cache),
                "peak_rss_mib": round(peak / 1024, 1)}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return {"cpu_model": model, "cores": os.cpu_count(), "ram_gib": round(int(mem.split()[1]) / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh clones, each with a cold uv cache")
    parser.add_argument("--no-reference", action="store_true", help="skip the full lock's wheels")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/exercises-setup-<date>.json)")
    args = parser.parse_args(argv)
    if shutil.which("python3.11") is None:
        raise SystemExit("python3.11 is not on PATH: the light set-up (make exercises) needs it")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    started = datetime.now(timezone.utc)
    result = {"benchmark": "exercises-setup", "commit": head, "started": started.isoformat(timespec="seconds"),
              "machine": machine(), "runs": []}
    for n in range(1, args.runs + 1):
        run = light_run(head)
        result["runs"].append(run)
        print(f"run {n}: make exercises {run['make_exercises_s']} s + check-exercise all "
              f"{run['check_exercise_all_s']} s = {run['total_s']} s; .venv {run['venv_mib']} MiB, "
              f"uv cache {run['uv_cache_mib']} MiB, both {run['peak_disk_venv_and_cache_mib']} MiB; "
              f"peak RSS {run['peak_rss_mib']} MiB", flush=True)
    keys = ("make_exercises_s", "check_exercise_all_s", "total_s", "venv_mib", "uv_cache_mib",
            "peak_disk_venv_and_cache_mib", "peak_rss_mib")
    result["median"] = {k: statistics.median(r[k] for r in result["runs"]) for k in keys}
    result["max"] = {k: max(r[k] for r in result["runs"]) for k in keys}
    print(f"median: {result['median']}", flush=True)
    out = args.out or RESULTS / f"exercises-setup-{started:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")  # kept even if the reference fails
    if not args.no_reference:
        result["reference"] = reference_run()
        print(f"reference: {result['reference']}", flush=True)
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
