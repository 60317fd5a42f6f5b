"""Build the Spark session the lab uses: a client of the lab's Spark Connect server when one runs
(SPARK_SERVER, `obslab spark start`), else a Spark inside this process with the Kafka connector from
the local jar cache."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from obslab import bootstrap
from obslab.errors import MissingDependencyError
from obslab.settings import Settings

log = logging.getLogger(__name__)

# Settings of every query the lab runs, on a session of its own or on the lab's server.
RUNTIME_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.adaptive.enabled": "false",
}


def kafka_connector_jars(settings: Settings) -> list[str]:
    """Paths of the spark-sql-kafka connector jars that `make setup` resolved for this Spark."""
    try:
        jars = bootstrap.jar_classpath(bootstrap.spark_kafka_jars(Path(sys.prefix)), settings.cache_dir)
    except bootstrap.SetupError as err:
        raise MissingDependencyError(f"{err} (the Spark Kafka connector is missing)") from None
    return [str(j) for j in jars]


def build_session(settings: Settings, app_name: str = "obslab"):
    """A client session of the lab's Spark server (see `obslab.stream.server.server_url`), or else a
    SparkSession on SPARK_MASTER inside this process with the Kafka connector on its classpath (offline)."""
    from obslab.stream.server import server_url

    url = server_url(settings)
    return connect_session(url) if url else local_session(settings, app_name)


def connect_session(url: str):
    """A Spark Connect client session of the server at `url` (about 2 s; the server's JVM does the work).

    Once a process has one, its pyspark stays in Connect mode: a Spark of its own cannot start after it."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.remote(url)
    for key, value in RUNTIME_CONF.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def local_session(settings: Settings, app_name: str = "obslab"):
    """A SparkSession on SPARK_MASTER inside this process (15-20 s and ~770 MB to start)."""
    from pyspark.sql import SparkSession

    s = settings
    # Keep Spark's own services on loopback too (it otherwise picks the first network interface).
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers (the stream's fast path runs in them) with the lab's Python, not the first on PATH
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(s.spark_master)
        .appName(app_name)
        .config("spark.jars", ",".join(kafka_connector_jars(s)))
        .config("spark.driver.memory", s.spark_driver_memory)
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    for key, value in RUNTIME_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def is_connect(spark) -> bool:
    """True for a Spark Connect client session (its work runs on a server, not in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def cores(spark) -> int:
    """How many tasks the session's Spark runs at once: N of a `local[N]` master (the machine's cores
    for `local[*]`), else spark.default.parallelism, else 2. Works on a Spark Connect session too."""
    master = spark.conf.get("spark.master", "")
    found = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master or "")
    if found:
        return (os.cpu_count() or 2) if found.group(1) == "*" else int(found.group(1))
    if master == "local":
        return 1
    return int(spark.conf.get("spark.default.parallelism", None) or 2)


# On a Spark Connect server the sink runs in a Python worker that must connect back to the server
# within Spark's fixed 10 s of its start; on a loaded machine its imports alone can take longer. Each
# attempt warms the page cache for the next; three were not enough at a load average of 19 (six cores'
# work on two), so six: a minute at most before the error is shown.
WORKER_LATE = "failed to connect back"
START_ATTEMPTS = 6


def start_query(writer):
    """Start the query; a sink worker that connected back too late is started again (nothing ran yet)."""
    for attempt in range(1, START_ATTEMPTS):
        try:
            return writer.start()
        except Exception as err:  # noqa: BLE001 - only the one known start failure is retried
            if WORKER_LATE not in str(err):
                raise
            log.warning("the sink's Python worker did not connect back to Spark in time (attempt %d of %d, "
                        "the machine is busy); starting the query again", attempt, START_ATTEMPTS)
    return writer.start()
