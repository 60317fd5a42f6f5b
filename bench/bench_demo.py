"""The one-command demo (issue 7): seconds from `obslab demo` (what `make demo` runs, after
`make setup`) to the first narrated incident visible on the dashboard, and peak memory of the
whole demo (every process it starts, the broker and Spark's JVM included).

Runs `obslab demo --scenario demo` in a temporary data dir on free ports. A headless chromium
(Playwright) keeps the dashboard open on the Incidents tab and polls it; the first narrative is
"visible" when an incident card with "Likely causes" is on the page. Memory: every second, the
sum of RSS over every process in the demo's process groups and the broker's (read with psutil).
R runs; the median is reported. Reference in the same run: the store's own time of that first
narrative (incident_summaries.created_at), i.e. what the dashboard adds on top, and where the time
went: the stream's first micro-batch, the first injected fault's start (event time: with the
demo's lead-in, DEMO_LEAD_IN_SECONDS, it lies that much sooner) and the first anomaly, each in
seconds after launch. DEMO_LEAD_IN_SECONDS=0 in the environment measures the demo without one.

    .venv/bin/python bench/bench_demo.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MIB, free_port, group_pids, isolated_settings, machine, matching_pids, rss_mib  # noqa: E402

from obslab import demo  # noqa: E402
from obslab.bootstrap import chromium_binary  # noqa: E402
from obslab.store import Store  # noqa: E402


def rss_of_groups(pgids: list[int], extra: list[str]) -> int:
    """Bytes of RSS summed over the processes of the groups and those whose command line has one of `extra`."""
    pids = set()
    for pgid in pgids:
        pids |= group_pids(pgid)
    for fragment in extra:
        pids |= matching_pids(fragment)
    return round(sum(rss_mib(pid) for pid in pids) * MIB)


def one_run() -> dict:
    from playwright.sync_api import sync_playwright

    data = Path(tempfile.mkdtemp(prefix="obslab-bench-demo-"))
    settings = isolated_settings(data)
    web = free_port()
    env = {**os.environ, "DATA_DIR": str(data), "KAFKA_PORT": str(settings.kafka_port),
           "KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port), "KAFKA_BOOTSTRAP_SERVERS": "",
           "DUCKDB_PATH": ""}
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "obslab.cli", "demo", "--port", str(web), "--minutes", "6"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.wait(1.0):
            groups = [p.pid for p in demo.status(settings)] + [proc.pid]
            peak[0] = max(peak[0], rss_of_groups(groups, [str(data / "kafka")]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    visible = None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_binary(), headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            deadline = time.time() + 360
            loaded = False
            while time.time() < deadline and visible is None:
                try:
                    if not loaded:
                        page.goto(f"http://127.0.0.1:{web}", timeout=5000)
                        page.wait_for_selector('[data-testid="stMetric"]', timeout=5000)
                        loaded = True
                    page.get_by_role("tab", name="Incidents").click(timeout=2000)
                    if page.get_by_text("Likely causes").count():
                        visible = time.time() - started
                except Exception:  # noqa: BLE001 - not up yet (no server, no data): try again
                    pass
                time.sleep(2)
            browser.close()
        time.sleep(3)  # a few more memory samples with everything running
    finally:
        stop.set()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    store = Store.from_settings(settings)
    first = store.query("SELECT min(created_at) FROM incident_summaries")[0][0]
    backend = store.query("SELECT arg_min(backend, created_at) FROM incident_summaries")[0][0]
    # Where the time went: the stream's first micro-batch, the first injected fault, the first detection.
    batch = store.query("SELECT min(applied_at) FROM stream_batches")[0][0]
    fault = store.query("SELECT min(start_time) FROM injected_incidents WHERE NOT benign")[0][0]
    detection = store.query("SELECT min(detected_at) FROM anomalies")[0][0]

    def since(at):
        return round(at.timestamp() - started, 1) if at else None

    return {"visible_on_dashboard_s": round(visible, 1) if visible else None, "in_store_s": since(first),
            "first_batch_s": since(batch), "first_fault_s": since(fault), "first_detection_s": since(detection),
            "first_backend": backend, "peak_rss_mib": round(peak[0] / 2**20), "demo_output_tail": out[-400:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        runs.append(one_run())
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "demo_output_tail"}), flush=True)
    ok = [r for r in runs if r["visible_on_dashboard_s"] is not None]
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": machine(), "runs": len(runs),
               "median_visible_on_dashboard_s": statistics.median(r["visible_on_dashboard_s"] for r in ok) if ok else None,
               "median_in_store_s": statistics.median(r["in_store_s"] for r in ok) if ok else None,
               "max_peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
               "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs)}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
