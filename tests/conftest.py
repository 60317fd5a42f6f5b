"""Shared fixtures: one real Kafka broker and one Spark session per test run, started on demand."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from obslab.settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def lab_settings(tmp_path_factory) -> Settings:
    """Settings of an isolated lab: its own data dir and free ports, the project's jar cache."""
    data = tmp_path_factory.mktemp("lab-data")
    port = free_port()
    controller = free_port()
    while controller == port:
        controller = free_port()
    return load_settings(data_dir=data, kafka_port=port, kafka_controller_port=controller,
                         kafka_bootstrap_servers="")


@pytest.fixture(scope="session")
def broker(lab_settings):
    """The real local Kafka broker (same code as `obslab broker start`), stopped after the run."""
    from obslab.broker import LocalBroker

    local = LocalBroker(lab_settings)
    local.start()
    yield local
    local.stop()


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
