"""The lab that tests and notebooks share during one pytest run.

One real Kafka broker (the same code as `obslab broker start`) on free ports, with its own data
folder, started the first time something needs it and stopped when the run ends. Notebooks run in
separate kernels, so before a notebook's kernel starts the lab's settings are exported to the
environment, where the kernel's `obslab.settings` reads them.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

_LAB: dict = {}

# Airflow reads AIRFLOW_HOME when it is first imported (obslab.schedule imports it) and writes there:
# keep that inside this run's temporary files, never in the user's ~/airflow.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="obslab-airflow-home-")
os.environ.pop("AIRFLOW_CONFIG", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_settings():
    """Settings of the shared lab (created once per run)."""
    if "settings" not in _LAB:
        from obslab.settings import load_settings

        data = Path(tempfile.mkdtemp(prefix="obslab-lab-"))
        port = free_port()
        controller = free_port()
        while controller == port:
            controller = free_port()
        _LAB["settings"] = load_settings(data_dir=data, kafka_port=port, kafka_controller_port=controller,
                                         kafka_bootstrap_servers="")
    return _LAB["settings"]


def lab_broker():
    """The shared broker, started on first use."""
    if "broker" not in _LAB:
        from obslab.broker import LocalBroker

        broker = LocalBroker(lab_settings())
        broker.start()
        _LAB["broker"] = broker
    return _LAB["broker"]


def pytest_collection_modifyitems(items):
    # A notebook runs against the shared broker and starts Spark: marked so, `make test` runs it with the
    # other tests that need them (and `make test-fast` leaves it out).
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.kafka)
            item.add_marker(pytest.mark.spark)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # nbval starts a notebook's kernel while setting up its first cell: export the lab before that.
    if item.path.suffix == ".ipynb" and "exported" not in _LAB:
        from obslab.broker import LocalBroker
        from obslab.settings import load_settings

        shared = lab_settings()
        lab_broker()
        # The notebooks get a clean lab of their own on the shared broker: their own data folder and
        # topics, so what tests publish on purpose (malformed events, say) never reaches them, and
        # notebook 07's checks judge the pipeline the notebooks ran, not the tests' leftovers.
        settings = load_settings(data_dir=shared.data_dir / "notebooks", kafka_port=shared.kafka_port,
                                 kafka_controller_port=shared.kafka_controller_port, kafka_bootstrap_servers="",
                                 topic_raw_events="nb_raw_events", topic_aggregated_metrics="nb_aggregated_metrics",
                                 topic_anomalies="nb_anomalies")
        LocalBroker(settings).ensure_topics()
        os.environ.update({
            "DATA_DIR": str(settings.data_dir),
            "KAFKA_PORT": str(settings.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            **{name.upper(): getattr(settings, name) for name in
               ("topic_raw_events", "topic_aggregated_metrics", "topic_anomalies")},
        })
        _LAB["exported"] = True
    if item.path.suffix == ".ipynb":
        _pipeline_before_07(item)


# Run by hand (and so under nbval, in order) notebooks 03 and 04 read a scratch store made by a replay, which
# leaves the lab's store and heartbeats as notebook 02 left them. Before notebook 07 judges the lab, its
# detector and narrator run as the scheduled pipeline runs them: 03 and 04 on the lab's own store.
PIPELINE_BEFORE_07 = {"03_detect_anomalies": {"source": "store"}, "04_narrate_incidents": {"source": "store"}}


def _pipeline_before_07(item) -> None:
    if item.path.stem != "07_monitoring" or "pipeline" in _LAB:
        return
    import papermill

    _LAB["pipeline"] = True
    runs = Path(os.environ["DATA_DIR"]) / "runs" / "nbval-pipeline"  # the executed copies
    runs.mkdir(parents=True, exist_ok=True)
    for name, parameters in PIPELINE_BEFORE_07.items():
        papermill.execute_notebook(str(item.path.parent / f"{name}.ipynb"), str(runs / f"{name}.ipynb"),
                                   parameters=parameters, kernel_name="obslab", cwd=str(item.path.parent),
                                   progress_bar=False)


def pytest_sessionfinish(session, exitstatus):
    broker = _LAB.pop("broker", None)
    if broker is not None:
        broker.stop()
