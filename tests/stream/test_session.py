"""Where the Spark session finds its Kafka connector (the session itself: tests/stream/test_job.py)."""

import json
import sys
from pathlib import Path

import pytest

from obslab import bootstrap
from obslab.errors import MissingDependencyError
from obslab.stream.session import kafka_connector_jars
from obslab.settings import load_settings


def test_without_the_connector_in_the_cache_the_error_says_what_is_missing_and_to_run_setup(tmp_path):
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "empty-cache")
    with pytest.raises(MissingDependencyError, match=r"spark-sql-kafka.*make setup.*Spark Kafka connector is missing"):
        kafka_connector_jars(settings)


def test_the_connector_jars_are_the_ones_its_manifest_lists(tmp_path):
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    folder = bootstrap.spark_kafka_jars(Path(sys.prefix)).folder(settings.cache_dir)  # this venv's Spark
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"jars": ["a.jar", "b.jar"]}))
    assert kafka_connector_jars(settings) == [str(folder / "a.jar"), str(folder / "b.jar")]
