"""Shared fixtures: one real Kafka broker and one Spark session per test run, started on demand."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import free_port, lab_broker  # noqa: F401 - free_port is used by tests
from conftest import lab_settings as shared_lab_settings
from obslab.settings import Settings


@pytest.fixture(scope="session")
def lab_settings() -> Settings:
    """Settings of the isolated lab this run shares: its own data dir and free ports, the project's jars."""
    return shared_lab_settings()


@pytest.fixture(scope="session")
def broker(lab_settings):
    """The real local Kafka broker (same code as `obslab broker start`), stopped when the run ends."""
    return lab_broker()


@pytest.fixture(scope="session")
def spark(lab_settings):
    """One Spark session for the whole run (~20 s to start)."""
    from obslab.stream.session import build_session

    session = build_session(lab_settings, app_name="obslab-tests")
    yield session
    session.stop()


@pytest.fixture()
def store_path(tmp_path) -> Path:
    return tmp_path / "observability.duckdb"


@pytest.fixture(scope="session")
def evaluated(spark, tmp_path_factory):
    """`evaluated(name)`: the evaluation of a shipped scenario (default settings, seed 42), run once
    per test run; its scratch store holds windows, anomalies, incidents and the ground truth."""
    from obslab.evaluation import evaluate
    from obslab.settings import load_settings

    settings = load_settings(data_dir=tmp_path_factory.mktemp("evaluated"))
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = evaluate(name, settings, spark=spark)
        return cache[name]

    get.settings = settings
    return get
