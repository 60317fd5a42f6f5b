"""A separate process that uses the store, for the concurrency tests (not a test module).

    python store_worker.py writer|reader|hold PATH SECONDS

Prints one JSON line: operations done, errors that reached the caller, last value seen.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone

from obslab.store import Store


def write_loop(store: Store, seconds: float) -> dict:
    done, errors = 0, []
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        window = start + timedelta(minutes=done)
        row = {
            "service": "checkout", "window_start": window, "window_end": window + timedelta(minutes=1),
            "request_count": done + 1, "error_count": 0, "error_rate": 0.0, "avg_latency_ms": 150.0,
            "p50_latency_ms": 150.0, "p95_latency_ms": 190.0, "p99_latency_ms": 210.0,
            "is_final": True, "updated_at": datetime.now(timezone.utc),
        }
        try:
            store.upsert("service_metrics", [row])
            done += 1
        except Exception as err:  # noqa: BLE001 - the test counts what reaches the caller
            errors.append(f"{type(err).__name__}: {err}")
        time.sleep(0.05)
    return {"ops": done, "errors": errors}


def read_loop(store: Store, seconds: float) -> dict:
    done, errors, seen = 0, [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            seen.append(store.query("SELECT count(*) FROM service_metrics WHERE service = ?", ["checkout"])[0][0])
            done += 1
        except Exception as err:  # noqa: BLE001
            errors.append(f"{type(err).__name__}: {err}")
        time.sleep(0.1)
    return {"ops": done, "errors": errors, "first": seen[0] if seen else None, "last": seen[-1] if seen else None,
            "monotonic": seen == sorted(seen)}


def hold(store: Store, seconds: float) -> dict:
    with store.writer():
        print(json.dumps({"holding": True}), flush=True)
        time.sleep(seconds)
    return {"held": seconds}


if __name__ == "__main__":
    role, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = Store(path, lock_timeout_s=30)
    result = {"writer": write_loop, "reader": read_loop, "hold": hold}[role](store, seconds)
    print(json.dumps(result), flush=True)
