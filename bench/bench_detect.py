"""Detection quality (issue 13): every shipped scenario on 20 untouched seeds, clean traffic, detection limits.

Three parts, all through `obslab.evaluation` (generator -> the stream's Spark transform ->
the stream's windows after every 5 s micro-batch -> run_detection after each, timed):

  scenarios   every scenario `available_scenarios()` lists (random included), on every seed;
              pooled per fault type: recall, precision, median / p90 time to detect, incidents per
              fault, benign events that paged, root cause named in cascades, false incidents
  clean       3 simulated hours of fault-free traffic at 10 and at 1,000 events/s (first 3 seeds):
              the traffic of the shipped `seasonal` scenario (its rhythm, over-dispersion and
              latency noise) with its faults removed; every incident is false
  limits      the smallest error surge and latency spike each detector catches at 10 and at 100
              events/s: one run per (rate, seed; first 3 seeds) with a descending ladder of error surges on
              payments and, at the same time, of latency spikes on checkout (default traffic),
              each fault 150 s, starting at unaligned times; a magnitude counts as caught by a
              detector when that detector raised an anomaly in an incident matching the fault, in
              every seed

All runs form one batch (`evaluate_many`): generation and replays in --workers processes, Spark
jobs of a few million events, each job's replays running while Spark does the next. Prints one
JSON line per finished run (to stderr), then the result as JSON and a markdown summary (stdout);
with --out, writes the JSON there too. `run_seconds` of a run is its share of generation and Spark
plus its own replay.

    .venv/bin/python bench/bench_detect.py [--seeds N ...] [--workers 2] [--out bench/results/detect-DATE.json]
    .venv/bin/python bench/bench_detect.py --quick    # 2 seeds, 30 clean minutes, 1 limit seed: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from obslab.evaluation import EvaluationRun, evaluate_many, pool, type_table  # noqa: E402
from obslab.generator.scenario import available_scenarios, load_scenario, parse_scenario  # noqa: E402
from obslab.settings import load_settings  # noqa: E402
from obslab.stream.session import build_session  # noqa: E402

# Drawn on 2026-12-05 at 13:43 UTC with Python's `secrets.randbelow(2**31)` (20 draws, then sorted),
# after the detectors of that session (issue 22: the warm-up judged on the spread of its history,
# a level that may be a slope) were final and before anything was run on these seeds. Nothing was
# tuned on them; do not tune on them: draw new ones instead.
SEEDS = [174337847, 244770374, 341058188, 431171196, 545040651, 618035396, 747794232, 816478428, 856147307,
         881382357, 898632051, 986257150, 1188105170, 1204094259, 1300797804, 1441364204, 1676288617, 1676987524,
         1697726313, 2094066620]
# The seventh draw (2026-12-05 12:58 UTC), no longer unseen: its figures (recall in time 98.5 %,
# traffic drop TTD p50 86 s; raw JSON kept) came with a latency degradation missed in a run's warm-up
# that the previous detectors found, and bench_traffic showed clean false windows 3 -> 14; both led
# to the last changes (a level that may be a slope; latency_spike's noise check after calibration).
SEEDS_SEVENTH = [47493994, 218162077, 271396874, 357242167, 650032069, 761726587, 843250388, 874502951, 996902002,
                 1034812332, 1049181799, 1141600304, 1157317878, 1350529207, 1515556374, 1590918620, 1630108871,
                 1874715474, 2112879592, 2120745148]
# The sixth draw (2026-12-05 10:24 UTC), no longer unseen: it gave the figures of 2026-12-05 morning,
# and the warm-up misses found on it led to the warm-up judgement; it was then used for development.
SEEDS_SIXTH = [103195960, 129382322, 146777565, 195102651, 246406945, 327454411, 395706993, 398045757, 622414015,
               804822996, 966083992, 1029345426, 1092107064, 1263200241, 1269490769, 1305643752, 1379074517,
               1458220942, 1499857318, 1924100251]
# Earlier draws, no longer unseen: the fifth (2026-11-29 01:08 UTC) gave the figures of 2026-11-29
# and, read under the in-time rule, showed the late traffic drops that issue 22 is about.
SEEDS_FIFTH = [76309914, 133181868, 397157832, 435376163, 693618982, 708195265, 766224850, 804005214, 931642126,
               933941707, 965002789, 1043401203, 1188962619, 1290313469, 1351348559, 1364652078, 1445980710,
               1489264938, 1602288400, 1955037632]
# Older draws, no longer unseen: the first (2026-11-28 11:31 UTC) gave BENCHMARKS.md's first figures
# of issue 13 and its misses were studied since; on the second (21:31 UTC) and third (22:07 UTC), false
# drops were found and looked into, which led to the last changes of the traffic model; the fourth
# (22:30 UTC) gave the figures of 2026-11-28 evening, and its misses (the seasonal drop, a cold-start
# error surge) led to the changes of 2026-11-29.
SEEDS_FIRST = [12516817, 23384442, 352394178, 416735561, 545107645, 682392878, 863556440, 893952093, 921877825,
               955005105, 961219263, 1107056318, 1297094249, 1369428766, 1893864616, 1949694723, 1958439278,
               2045289954, 2068568986, 2081890664]
SEEDS_SECOND = [105237674, 149438845, 566037338, 594865952, 631947200, 645917051, 756241846, 773773049, 874882620,
                892321654, 1029906104, 1167187884, 1293754168, 1360918644, 1382474474, 1536411131, 1546706094,
                1573699293, 1995811351, 2000414694]
SEEDS_THIRD = [148798388, 286758878, 306018677, 380152081, 577623221, 722556998, 801523200, 891545777, 1032610135,
               1104750144, 1147794223, 1164141607, 1178455958, 1209048454, 1273232854, 1688176574, 1704618233,
               1915429616, 1953444547, 2076457695]
SEEDS_FOURTH = [65464049, 144733215, 203322465, 333030365, 450098147, 710793497, 724923211, 808051673, 826871455,
                831589126, 970586853, 1271343786, 1337411998, 1342860912, 1409091894, 1445285015, 1490816028,
                1498002413, 1958544860, 1972486723]

CLEAN_RATES = (10, 1000)
CLEAN_HOURS = 3.0
LIMIT_RATES = (10, 100)
LIMIT_SEEDS = 3  # the first seeds of the list
# Descending, so a missed small fault cannot leave its errors in the baseline of a larger one.
LIMIT_LADDERS = {
    "error_surge": ("payments", [0.3, 0.25, 0.2, 0.16, 0.13, 0.1, 0.08, 0.065, 0.05, 0.04, 0.03]),
    "latency_spike": ("checkout", [7.0, 5.0, 4.0, 3.0, 2.5, 2.0, 1.75, 1.5, 1.3, 1.15]),
}
LIMIT_WARMUP_S, LIMIT_FAULT_S, LIMIT_STEP_S = 900, 150, 480  # 15 min of baseline; a fault every 8 min

# Targets of issue 13 (pooled over seeds): checked and reported, never adjusted here.
TARGETS = {"recall": 1.0, "precision": 0.95, "benign_paged": 0, "clean_false_incidents": 0,
           "median_ttd_seconds": 35.0, "root_cause_accuracy": 0.9}
TTD_TARGET_TYPES = ("error_surge", "latency_spike", "endpoint_outage")


def log_run(part: str, report) -> None:
    print(json.dumps({"part": part, "scenario": report.scenario, "seed": report.seed,
                      "rate": report.events_per_second, "events": report.events, "recall": report.recall,
                      "precision": report.precision, "false_incidents": report.false_incidents,
                      "ttds": [f.ttd_seconds for f in report.faults], "benign_paged": report.benign_paged,
                      "root_cause": report.root_cause_accuracy, "seconds": round(report.seconds, 1)}),
          file=sys.stderr, flush=True)


_SCRATCH: list[Path] = []


def scratch(prefer_memory: bool) -> Path:
    """A new scratch folder, removed at the end of the run.

    Stores go to RAM when there is a tmpfs: a detection run commits small transactions, and a
    disk's sync on every commit would be much of the replay's time. Large event files go to disk.
    """
    base = "/dev/shm" if prefer_memory and Path("/dev/shm").is_dir() else None
    _SCRATCH.append(Path(tempfile.mkdtemp(prefix="obslab-bench-detect-", dir=base)))
    return _SCRATCH[-1]


def clean_scenario(hours: float):
    """The traffic of the shipped `seasonal` scenario (rhythm, over-dispersion, latency noise), no faults."""
    seasonal = load_scenario("seasonal")
    return seasonal.model_copy(update={
        "name": "clean-seasonal", "description": "seasonal's traffic without its faults",
        "duration_seconds": hours * 3600, "faults": [], "benign": [],
        "random": seasonal.random.model_copy(update={"anomaly_probability": 0.0})})


def ladder_scenario(rate: float, seed: int):
    """Descending ladders of error surges (payments) and latency spikes (checkout), at unaligned starts."""
    import random

    jitter = random.Random(seed)  # starts move a little per seed, never onto a window boundary
    faults, steps = [], max(len(m) for _, m in LIMIT_LADDERS.values())
    for fault_type, (service, magnitudes) in LIMIT_LADDERS.items():
        for n, magnitude in enumerate(magnitudes):
            start = LIMIT_WARMUP_S + n * LIMIT_STEP_S + jitter.randrange(5, 55)  # 5-54 s past a minute
            faults.append({"type": fault_type, "service": service, "start_seconds": start,
                           "duration_seconds": LIMIT_FAULT_S, "magnitude": magnitude})
    text = json.dumps({"name": f"limits-{rate:g}", "description": "detection limit ladders",
                       "duration_seconds": LIMIT_WARMUP_S + steps * LIMIT_STEP_S + 300,
                       "traffic": {"events_per_second": rate}, "faults": faults})
    return parse_scenario(text, "bench ladder")


def plan_runs(seeds, clean_seeds, limit_seeds, clean_hours, parts) -> list[tuple[str, EvaluationRun]]:
    """(part, run) for every run of the benchmark; the biggest first, so that their Spark jobs overlap
    the replays of the others."""
    runs = []
    if "clean" in parts:
        plan = clean_scenario(clean_hours)
        runs += [("clean", EvaluationRun(plan, seed, events_per_second=rate))
                 for rate in sorted(CLEAN_RATES, reverse=True) for seed in clean_seeds]
    if "limits" in parts:
        runs += [("limits", EvaluationRun(ladder_scenario(rate, seed), seed)) for rate in LIMIT_RATES
                 for seed in limit_seeds]
    if "scenarios" in parts:
        runs += [("scenarios", EvaluationRun(name, seed)) for name in available_scenarios() for seed in seeds]
    return runs


def limits_summary(reports) -> dict:
    """Per (fault type, rate): for each magnitude, the seeds in which each detector (and any) caught it;
    the smallest magnitude caught in every seed, and the smallest from which every larger one is too."""
    out = {}
    for fault_type, (service, magnitudes) in LIMIT_LADDERS.items():
        for rate in LIMIT_RATES:
            mine = [r for r in reports if r.events_per_second == rate]
            detectors = sorted({d for r in mine for f in r.faults if f.type == fault_type for d in f.detectors})
            table = {}
            for m in magnitudes:
                faults = [f for r in mine for f in r.faults if f.type == fault_type and abs(f.magnitude - m) < 1e-9]
                table[m] = {"seeds": len(faults), "any": sum(f.detected for f in faults),
                            **{d: sum(d in f.detectors for f in faults) for d in detectors}}
            limits = {}
            for who in ["any", *detectors]:
                caught = [m for m in magnitudes if table[m][who] == table[m]["seeds"] > 0]
                steady = None
                for m in sorted(magnitudes, reverse=True):
                    if m not in caught:
                        break
                    steady = m
                limits[who] = {"smallest_caught_in_all_seeds": min(caught) if caught else None,
                               "caught_from_here_up": steady}
            out[f"{fault_type}@{rate:g}"] = {"fault_type": fault_type, "service": service, "rate": rate,
                                            "seeds": len(mine), "by_magnitude": table, "limits": limits}
    return out


def targets(pooled: dict, clean: dict) -> dict:
    """Each target of issue 13: the measured value, the target, met or not and by how much."""
    o, by_type = pooled["overall"], pooled["by_type"]
    # The target is at the documented magnitudes: a cascade's effect on a caller is smaller by
    # design (a share of its requests), so it is reported with the rest but not held to it.
    roots = [t for name, t in by_type.items() if name != "cascade_effect"]
    root_recall = sum(t["detected"] for t in roots) / sum(t["faults"] for t in roots) if roots else None
    rows = {
        "recall (cascade effects excluded)": (root_recall, TARGETS["recall"], ">="),
        "recall (cascade effects included)": (o["recall"], TARGETS["recall"], ">="),
        "recall (faults after the warm-up)": (o["recall_after_warm_up"], TARGETS["recall"], ">="),
        "precision": (o["precision"], TARGETS["precision"], ">="),
        "benign_paged": (o["benign_paged"], TARGETS["benign_paged"], "<="),
        "root_cause_accuracy": (o["root_cause_accuracy"], TARGETS["root_cause_accuracy"], ">="),
    }
    for rate, part in clean.items():
        rows[f"clean_false_incidents@{rate}"] = (part["false_incidents"], TARGETS["clean_false_incidents"], "<=")
    for t in TTD_TARGET_TYPES:
        if t in by_type:
            rows[f"median_ttd_seconds:{t}"] = (by_type[t]["median_ttd_seconds"], TARGETS["median_ttd_seconds"], "<=")
    out = {}
    for name, (value, target, op) in rows.items():
        met = value is not None and (value >= target if op == ">=" else value <= target)
        out[name] = {"value": value, "target": f"{op} {target}", "met": met,
                     "short_by": None if met or value is None else round(abs(value - target), 4)}
    return out


def compact(report) -> dict:
    return {"scenario": report.scenario, "seed": report.seed, "rate": report.events_per_second,
            "events": report.events, "recall": report.recall, "precision": report.precision,
            "false_incidents": report.false_incidents,
            "false": [(i.incident_id, i.cause) for i in report.incidents if not i.matched],
            "faults": [(f.type if not f.cause_fault_id else f"effect:{f.type}", f.service, f.magnitude, f.detected,
                        f.ttd_seconds, len(f.incident_ids), f.detectors) for f in report.faults],
            "benign": [(b.type, b.service, b.paged) for b in report.benign],
            "cascades": [(c.root_fault_id, c.root_cause, c.correct, c.origins) for c in report.cascades],
            "detect_run_seconds_max": max(report.detect_run_seconds, default=None),
            "seconds": round(report.seconds, 1)}


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return head.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(seeds: list[int], workers: int, clean_hours: float, clean_seeds: int, limit_seeds: int,
        parts: set[str]) -> dict:
    started = time.monotonic()
    settings = load_settings(data_dir=scratch(prefer_memory=True))
    spark = build_session(settings, app_name="bench-detect")
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": machine(),
                    "commit": commit(), "seeds": seeds, "workers": workers,
                    "settings": {k: getattr(settings, k) for k in (
                        "window_seconds", "trigger_seconds", "detect_poll_seconds", "watermark_seconds",
                        "partial_window_min_requests", "detect_lookback_minutes", "resolve_after_windows")}}
    planned = plan_runs(seeds, seeds[:clean_seeds], seeds[:limit_seeds], clean_hours, parts)
    try:
        # One batch: generation in the workers, Spark jobs of a few million events each, every
        # job's replays in the workers while Spark runs the next. Stores in RAM, events on disk.
        reports = evaluate_many([r for _, r in planned], settings, spark, workers=workers,
                                root=scratch(prefer_memory=True), events_dir=scratch(prefer_memory=False) / "events",
                                progress=lambda n, r: log_run(planned[n][0], r))
    finally:
        spark.stop()
        for path in _SCRATCH:
            shutil.rmtree(path, ignore_errors=True)
    by_part: dict[str, list] = {}
    for (part, _), report in zip(planned, reports):
        by_part.setdefault(part, []).append(report)
    scenarios: dict[str, list] = {}
    for report in by_part.get("scenarios", []):
        scenarios.setdefault(report.scenario, []).append(report)
    clean = {rate: [r for r in by_part.get("clean", []) if r.events_per_second == rate] for rate in CLEAN_RATES
             if "clean" in parts}
    every = by_part.get("scenarios", [])
    pooled = pool(every) if every else None
    result["scenarios"] = {name: {"pooled": pool(mine), "run_seconds": round(sum(r.seconds for r in mine), 1),
                                  "runs": [compact(r) for r in mine]} for name, mine in scenarios.items()}
    result["pooled"] = pooled
    result["clean"] = {str(rate): {"hours_per_run": clean_hours, "runs": len(mine),
                                   "events": sum(r.events for r in mine),
                                   "false_incidents": sum(r.false_incidents for r in mine),
                                   "false": [compact(r)["false"] for r in mine],
                                   "run_seconds": round(sum(r.seconds for r in mine), 1),
                                   "detect_run_seconds": pool(mine)["overall"]["detect_run_seconds"]}
                       for rate, mine in clean.items()}
    result["limits"] = limits_summary(by_part["limits"]) if "limits" in by_part else None
    result["targets"] = targets(pooled, result["clean"]) if pooled else None
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def markdown(result: dict) -> str:
    lines = [f"Detection benchmark, {result['date']}, commit {result['commit']}, {len(result['seeds'])} seeds, "
             f"wall {result['wall_seconds'] / 60:.1f} min", ""]
    if result["pooled"]:
        lines += ["Pooled over every shipped scenario and seed:", "", type_table(result["pooled"]), ""]
        lines += ["| scenario | runs | faults | recall | precision | false incidents | benign paged | "
                  "root cause | median TTD | run seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, part in result["scenarios"].items():
            o = part["pooled"]["overall"]
            pct = lambda x: "-" if x is None else f"{100 * x:.1f} %"  # noqa: E731
            ttd = "-" if o["median_ttd_seconds"] is None else f"{o['median_ttd_seconds']:.1f} s"
            lines.append(f"| {name} | {o['runs']} | {o['faults']} | {pct(o['recall'])} | {pct(o['precision'])} | "
                         f"{o['false_incidents']} | {o['benign_paged']}/{o['benign_events']} | "
                         f"{o['cascades_named']}/{o['cascades']} | {ttd} | {part['run_seconds']:.0f} s |")
        lines.append("")
    for rate, c in result["clean"].items():
        lines.append(f"Clean seasonal traffic at {rate} events/s: {c['runs']} runs x {c['hours_per_run']:g} h, "
                     f"{c['events']:,} events, **{c['false_incidents']} false incidents**")
    if result["limits"]:
        lines += ["", "| fault @ events/s | service | detector | smallest caught in all seeds | caught from here up |",
                  "|---|---|---|---:|---:|"]
        for key, part in result["limits"].items():
            for who, lim in part["limits"].items():
                lines.append(f"| {key} | {part['service']} | {who} | {lim['smallest_caught_in_all_seeds']} | "
                             f"{lim['caught_from_here_up']} |")
    if result["targets"]:
        lines += ["", "| target | value | wanted | met |", "|---|---:|---:|---|"]
        for name, t in result["targets"].items():
            short = "" if t["met"] or t["short_by"] is None else f" (short by {t['short_by']})"
            lines.append(f"| {name} | {t['value']} | {t['target']} | {'yes' if t['met'] else 'NO' + short} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="default: the 20 drawn seeds above")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="replay processes")
    parser.add_argument("--clean-hours", type=float, default=CLEAN_HOURS, help="simulated hours per clean run")
    parser.add_argument("--clean-seeds", type=int, default=3, help="seeds (first of the list) for the clean runs")
    parser.add_argument("--limit-seeds", type=int, default=LIMIT_SEEDS, help="seeds (first of the list) per limit")
    parser.add_argument("--parts", nargs="+", default=["scenarios", "clean", "limits"],
                        choices=["scenarios", "clean", "limits"])
    parser.add_argument("--quick", action="store_true", help="2 seeds; 1 clean seed of 0.5 h; 1 limit seed")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    seeds = args.seeds[:2] if args.quick else args.seeds
    clean_hours = 0.5 if args.quick else args.clean_hours
    result = run(seeds, args.workers, clean_hours, 1 if args.quick else args.clean_seeds,
                 1 if args.quick else args.limit_seeds, set(args.parts))
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    print(markdown(result))


if __name__ == "__main__":
    main()
