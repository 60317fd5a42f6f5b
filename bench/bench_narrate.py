"""Narration latency (issue 6): the embedded model on 2 threads over the incidents of `mixed`.

Builds the `mixed` scenario's incidents with `obslab evaluate` (generator -> the stream's transform
and sink -> detection), then for each incident and each of R rounds composes a narrative:

  llamacpp    the embedded Gemma 3 270M (LLM_THREADS, NARRATE_MAX_TOKENS), grounding check, one
              retry, template fallback: what `obslab narrate` stores
  template    the rule-based text of the same facts (the reference, measured in the same run)

Rounds after the first reuse the loaded model (the narrator process keeps it); the model load is
timed on its own. Reports p50/p95 latency per backend, tokens, and how often the model's first
attempt failed grounding, and how often it fell back to the template after the retry.

    .venv/bin/python bench/bench_narrate.py [--rounds R] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from obslab.evaluation import evaluate  # noqa: E402
from obslab.narrate.backends import LlamaCppBackend, TemplateBackend  # noqa: E402
from obslab.narrate.facts import build_facts  # noqa: E402
from obslab.narrate.run import compose  # noqa: E402
from obslab.settings import load_settings  # noqa: E402
from obslab.store import Store  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def run(rounds: int) -> dict:
    settings = load_settings(data_dir=Path(tempfile.mkdtemp(prefix="obslab-bench-narrate-")))
    report = evaluate("mixed", settings)
    store = Store(report.store_path)
    facts = [build_facts(store, i.incident_id, settings.window_seconds) for i in report.incidents]
    facts.sort(key=lambda f: f["kind"])  # as `obslab narrate` takes them: grouped by kind
    model = LlamaCppBackend(settings.llm_model_path, settings.llm_threads, settings.narrate_max_tokens,
                            settings.narrate_temperature)
    started = time.monotonic()
    model._load()
    load_s = time.monotonic() - started
    rows = []
    for r in range(rounds):
        for f in facts:
            for backend in (model, TemplateBackend()):
                row = compose(f, backend, settings).row
                rows.append({"round": r, "incident": f["incident_id"], "requested": backend.name,
                             "stored": row["backend"], "latency_ms": row["latency_ms"], "tokens": row["tokens"],
                             "attempts": row["attempts"], "fallback_reason": row["fallback_reason"]})
                print(json.dumps(rows[-1]), flush=True)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": machine(),
           "incidents": len(facts), "rounds": rounds, "model_load_seconds": round(load_s, 2),
           "threads": settings.llm_threads, "max_tokens": settings.narrate_max_tokens}
    for name in ("llamacpp", "template"):
        mine = [x for x in rows if x["requested"] == name]
        lat = [x["latency_ms"] for x in mine]
        out[name] = {"n": len(mine), "p50_ms": round(statistics.median(lat), 1), "p95_ms": round(percentile(lat, 0.95), 1),
                     "tokens_median": statistics.median(x["tokens"] for x in mine)}
    model_rows = [x for x in rows if x["requested"] == "llamacpp"]
    out["llamacpp"]["first_attempt_ungrounded"] = sum(x["attempts"] > 1 or x["stored"] == "template" for x in model_rows)
    out["llamacpp"]["fell_back_to_template"] = sum(x["stored"] == "template" for x in model_rows)
    out["llamacpp"]["reasons"] = sorted({x["fallback_reason"] for x in model_rows if x["fallback_reason"]})
    out["ratio_p50_llamacpp_to_template"] = round(out["llamacpp"]["p50_ms"] / max(out["template"]["p50_ms"], 0.001), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.rounds)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
