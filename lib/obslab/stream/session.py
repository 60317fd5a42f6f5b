"""Build the Spark session the lab uses, with the Kafka connector from the local jar cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from obslab import bootstrap
from obslab.errors import MissingDependencyError
from obslab.settings import Settings


def kafka_connector_jars(settings: Settings) -> list[str]:
    """Paths of the spark-sql-kafka connector jars that `make setup` resolved for this Spark."""
    try:
        jars = bootstrap.jar_classpath(bootstrap.spark_kafka_jars(Path(sys.prefix)), settings.cache_dir)
    except bootstrap.SetupError as err:
        raise MissingDependencyError(f"{err} (the Spark Kafka connector is missing)") from None
    return [str(j) for j in jars]


def build_session(settings: Settings, app_name: str = "obslab"):
    """A SparkSession on SPARK_MASTER with the Kafka connector on its classpath (offline)."""
    from pyspark.sql import SparkSession

    s = settings
    # Keep Spark's own services on loopback too (it otherwise picks the first network interface).
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.master(s.spark_master)
        .appName(app_name)
        .config("spark.jars", ",".join(kafka_connector_jars(s)))
        .config("spark.driver.memory", s.spark_driver_memory)
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.adaptive.enabled", "false")
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
