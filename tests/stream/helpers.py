"""Shared helpers for the stream tests (not a test module)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
from kafka.admin import NewTopic

from obslab.broker import admin_client, producer
from obslab.generator.events import EventStream
from obslab.generator.scenario import load_scenario

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def event_lines(scenario="mixed", seconds=600, seed=5, rate=None, start=T0) -> list[str]:
    stream = EventStream(load_scenario(scenario), seed, start, rate)
    lines, t = [], start
    while t < start + timedelta(seconds=seconds):
        lines.extend(stream.tick(t, 10.0).json_lines())
        t += timedelta(seconds=10)
    return lines


def lab_for(lab_settings, tmp_path, **overrides):
    """Settings of one test: its own topic, data dir (store, checkpoints); the shared broker."""
    topic = f"raw_{uuid.uuid4().hex[:10]}"
    admin = admin_client(lab_settings)
    admin.create_topics([NewTopic(name, lab_settings.kafka_partitions, 1) for name in (topic, f"agg_{topic}")])
    admin.close()
    return lab_settings.model_copy(update={"topic_raw_events": topic, "data_dir": tmp_path,
                                           "duckdb_path": tmp_path / "observability.duckdb",
                                           "topic_aggregated_metrics": f"agg_{topic}", **overrides})


def publish(settings, lines: list[str]) -> None:
    p = producer(settings)
    for line in lines:
        try:
            key = json.loads(line)["service"].encode()
        except Exception:  # noqa: BLE001 - malformed lines have no service
            key = b"unknown"
        p.send(settings.topic_raw_events, key=key, value=line.encode())
    p.flush()
    p.close()


def truth(lines: list[str], window_seconds=60) -> pd.DataFrame:
    """Per service and window: counts and errors computed directly from the events."""
    df = pd.DataFrame([json.loads(line) for line in lines])
    df["window_start"] = pd.to_datetime(df["event_time"]).dt.floor(f"{window_seconds}s")
    return (df.assign(err=df.status_code >= 400).groupby(["service", "window_start"])
              .agg(request_count=("event_id", "size"), error_count=("err", "sum")).reset_index())


def stored(store, table="service_metrics") -> pd.DataFrame:
    df = store.query_df(f"SELECT service, window_start, request_count, error_count FROM {table}")
    df["window_start"] = pd.to_datetime(df["window_start"]).dt.tz_convert("UTC")
    return df.sort_values(["service", "window_start"]).reset_index(drop=True)


def same_counts(store, lines, window_seconds=60) -> bool:
    """True when the store's service windows hold exactly the events' counts (no window more or less)."""
    want = truth(lines, window_seconds)
    got = stored(store)
    for df in (want, got):
        df["window_start"] = df["window_start"].astype("datetime64[ns, UTC]")
        df["request_count"] = df["request_count"].astype("int64")
        df["error_count"] = df["error_count"].astype("int64")
    both = want.merge(got, on=["service", "window_start"], how="outer", suffixes=("", "_stored"), indicator=True)
    diff = both[(both["_merge"] != "both") | (both.request_count != both.request_count_stored)
                | (both.error_count != both.error_count_stored)]
    if not diff.empty:
        print("count mismatches:\n", diff.head(20).to_string())
    return diff.empty
