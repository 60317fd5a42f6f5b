"""obslab.scratch: a scratch store made by replaying a scenario offline (no broker, Spark or JVM)."""

import subprocess
import sys

import pytest

from obslab.errors import ConfigError
from obslab.scratch import replay_store, store_settings
from obslab.settings import load_settings
from obslab.store import Store


def test_a_replay_fills_a_scratch_store_and_leaves_the_labs_alone(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    made = replay_store(settings, "demo", seed=7, minutes=6, name="t", detect=True)
    assert made.settings.data_dir == tmp_path / "runs" / "t-replay"
    store = Store.from_settings(made.settings)
    requests = store.query("SELECT sum(request_count) FROM service_metrics")[0][0]
    assert requests == made.events > 0  # every generated event counted once, none a dead letter
    assert made.dead_letters == 0
    services = {s for (s,) in store.query("SELECT DISTINCT service FROM service_metrics")}
    assert services == {"checkout", "payments", "search"}  # the demo's three services
    # one micro-batch with the stream's watermark: the oldest windows final, the newest still open
    finals = dict(store.query("SELECT is_final, count(*) FROM service_metrics GROUP BY is_final"))
    assert finals[True] > 0 and finals[False] > 0
    assert store.query("SELECT count(*) FROM injected_incidents")[0][0] > 0  # the ground truth is there
    assert made.incidents == store.query("SELECT count(*) FROM incidents")[0][0] > 0  # the demo's first fault
    assert not (tmp_path / "observability.duckdb").exists()  # the lab's own store was not made
    assert "replay:" in made.describe() and str(made.settings.duckdb_path) in made.describe()


def test_a_replay_of_zero_minutes_leaves_an_empty_store(tmp_path):
    made = replay_store(load_settings(data_dir=tmp_path), "demo", minutes=0, name="t")
    assert made.events == 0 and made.service_windows == 0


def test_the_store_source_is_the_labs_own_and_a_wrong_source_says_what_to_use(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    same, why = store_settings("store", settings)
    assert same is settings and "the lab's own store" in why
    with pytest.raises(ConfigError, match="use 'replay'.*or 'store'"):
        store_settings("kafka", settings)


def test_a_replay_imports_no_spark_or_kafka(tmp_path):
    code = ("import sys; from obslab.scratch import replay_store; from obslab.settings import load_settings; "
            f"replay_store(load_settings(data_dir={str(tmp_path)!r}), 'demo', minutes=3, detect=True); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'kafka', 'py4j', 'airflow')); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
