"""What the soak (bench/soak.py) decides without running anything: its fault schedule, the generator's
scenario (and what a restarted generator continues with), the count check and each fault's recovery.

Pure functions, so tests/test_soak_bench.py checks them in milliseconds.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

# kind -> (what is hit, seconds the fault lasts: 0 = a single blow, the lab then recovers by itself)
FAULTS: dict[str, tuple[str, float]] = {
    "kill:stream": ("stream", 0.0),
    "kill:detect": ("detect", 0.0),
    "kill:narrate": ("narrate", 0.0),
    "kill:generate": ("generate", 0.0),
    "kill:dashboard": ("dashboard", 0.0),
    "kill:kernel": ("an Airflow task's notebook kernel", 0.0),
    "broker_restart": ("broker", 30.0),  # stopped, started again 30 s later
    "store_lock": ("store", 120.0),  # another process holds the DuckDB file for writing
    "disk_full": ("data folder", 60.0),  # DATA_DIR's tmpfs filled by a file, then the file removed
    "backend_hang": ("narrator backend", 60.0),  # the Ollama-API server accepts and never answers
}
WARMUP_S = 240.0  # no fault before this: Airflow up, the stream's first batches, the history counted
TAIL_S = 240.0  # no fault in the last this many seconds: the last fault's recovery is seen
SETTLE_S = 60.0  # at least this long between one fault's end and the next one's start


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: `kind` (a FAULTS key) at `at_s` seconds after the soak began, lasting `duration_s`."""

    at_s: float
    kind: str
    duration_s: float

    @property
    def target(self) -> str:
        return FAULTS[self.kind][0]

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def as_dict(self) -> dict:
        return {**asdict(self), "target": self.target}


def fault_schedule(seed: int, seconds: float, kinds: list[str] | None = None, warmup_s: float = WARMUP_S,
                   tail_s: float = TAIL_S, settle_s: float = SETTLE_S) -> list[Fault]:
    """Each of `kinds` (default: every fault) once, in a seeded random order at seeded random moments of
    [warmup_s, seconds - tail_s], never two at once: at least `settle_s` from one fault's end to the next."""
    kinds = list(FAULTS) if kinds is None else kinds
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; choose from {', '.join(FAULTS)}")
    rng = random.Random(seed)
    order = rng.sample(kinds, len(kinds))
    busy = sum(FAULTS[k][1] + settle_s for k in order)
    slack = seconds - tail_s - warmup_s - busy
    if slack < 0:
        raise ValueError(f"{len(order)} faults need {warmup_s + busy + tail_s:.0f} s (warm-up, each fault and "
                         f"{settle_s:.0f} s after it, tail); the soak lasts {seconds:.0f} s: make it longer "
                         "(--minutes) or choose fewer faults (--faults)")
    # The slack is cut at random points into len+1 gaps, one before each fault and one after the last.
    cuts = sorted(rng.uniform(0, slack) for _ in order)
    gaps = [b - a for a, b in zip([0.0, *cuts], cuts)]
    out, at = [], warmup_s
    for kind, gap in zip(order, gaps):
        at += gap
        out.append(Fault(round(at, 1), kind, FAULTS[kind][1]))
        at += FAULTS[kind][1] + settle_s
    return out


# The generator's scenario: one injected fault every FAULT_EVERY_S seconds of scenario time, rotating
# through these (type, service, endpoint, magnitude), each lasting SCENARIO_FAULT_S.
SCENARIO_FAULTS = [("error_surge", "payments", None, 0.3),
                   ("latency_spike", "checkout", "/api/checkout", 8.0),
                   ("error_surge", "checkout", None, 0.4),
                   ("latency_spike", "search", None, 6.0)]
FIRST_FAULT_S = 150.0  # scenario second of the first fault (the demo's generator starts 60 s into it)
FAULT_EVERY_S = 300.0
SCENARIO_FAULT_S = 120.0


def soak_scenario(seconds: float, name: str = "soak") -> dict:
    """A scenario (as YAML-ready data) `seconds` long with the rotating injected faults."""
    faults, at, i = [], FIRST_FAULT_S, 0
    while at + SCENARIO_FAULT_S <= seconds:
        kind, service, endpoint, magnitude = SCENARIO_FAULTS[i % len(SCENARIO_FAULTS)]
        faults.append({"type": kind, "service": service, "start_seconds": at, "duration_seconds": SCENARIO_FAULT_S,
                       "magnitude": magnitude, **({"endpoint": endpoint} if endpoint else {})})
        at, i = at + FAULT_EVERY_S, i + 1
    return {"name": name, "description": "bench/soak.py: a fault every 5 minutes, rotating over services",
            "duration_seconds": seconds, "faults": faults}


def continued_scenario(scenario: dict, elapsed_s: float, name: str) -> dict:
    """What a generator restarted `elapsed_s` seconds into `scenario` runs: the rest of it, its faults that had
    not begun yet moved to the new start (a fault under way when the generator died is not resumed)."""
    faults = [{**f, "start_seconds": round(f["start_seconds"] - elapsed_s, 1)}
              for f in scenario["faults"] if f["start_seconds"] >= elapsed_s]
    return {**scenario, "name": name, "duration_seconds": max(60.0, scenario["duration_seconds"] - elapsed_s),
            "faults": faults}


def count_check(acknowledged: int, requests: int, dead_letters: int) -> dict:
    """Events the broker acknowledged vs events the lab counted (metric windows + dead letters).
    Only the sums are compared: a lost event and a double-counted one elsewhere would cancel out,
    which the per-partition offsets check beside it (consumed == acknowledged) narrows."""
    counted = requests + dead_letters
    return {"acknowledged": acknowledged, "counted": counted, "requests": requests, "dead_letters": dead_letters,
            "lost": max(0, acknowledged - counted), "double": max(0, counted - acknowledged),
            "ok": counted == acknowledged}


def recovery_seconds(samples: list[dict], since: float, bound_s: float, stage: str | None = None,
                     old_pid: int | None = None) -> float | None:
    """Seconds from `since` (a time.time()) to the first sample at or after it where the stream has moved on
    (a newer window end than the last one seen before `since`), freshness is at most `bound_s` and, if `stage`
    is given, that stage runs with another pid than `old_pid`; None if never.
    A sample: {"t": time.time(), "freshness_s": float | None (store busy), "pids": {stage: pid | None}};
    its newest window end is t - freshness_s."""
    before = [s["t"] - s["freshness_s"] for s in samples if s["t"] < since and s.get("freshness_s") is not None]
    newest_before = max(before, default=float("-inf"))
    for s in samples:
        if s["t"] < since or s.get("freshness_s") is None or s["freshness_s"] > bound_s:
            continue
        if s["t"] - s["freshness_s"] <= newest_before:
            continue  # no window newer than before the fault yet
        if stage is not None:
            pid = s.get("pids", {}).get(stage)
            if pid is None or pid == old_pid:
                continue
        return round(s["t"] - since, 1)
    return None


def generator_deaths(samples: list[dict]) -> list[float]:
    """The times (a sample's t) at which a generator seen running in the previous sample was gone or replaced."""
    out, before = [], None
    for s in samples:
        pid = s.get("pids", {}).get("generate")
        if before is not None and pid != before:
            out.append(s["t"])
        before = pid
    return out
