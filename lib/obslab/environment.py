"""Checks that the lab's environment is complete: what `obslab doctor` and notebook 00 show."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from obslab import bootstrap
from obslab.settings import Settings


@dataclass(frozen=True)
class Check:
    """One environment check: its name, whether it passed, and what was found or what to do."""

    name: str
    ok: bool
    detail: str


def check_environment(settings: Settings, broker: bool = False) -> list[Check]:
    """Run every check; `broker=True` also asks the configured Kafka brokers for their topics."""
    s = settings
    checks = [
        Check("python", sys.version_info[:2] == (3, 11), f"Python {sys.version.split()[0]} at {sys.executable}"),
        _java(),
        _jars("kafka broker jars", bootstrap.kafka_broker_jars, s),
        _jars("spark kafka connector", lambda: bootstrap.spark_kafka_jars(Path(sys.prefix)), s),
        _writable("data dir", s.data_dir),
    ]
    if broker:
        checks.append(_broker(s))
    return checks


def _java() -> Check:
    java = bootstrap.find_java()
    major = bootstrap.java_major_version(java)
    if major is None:
        return Check("java", False, f"no Java at {java}: install OpenJDK 17+ or set JAVA_HOME")
    return Check("java", major >= bootstrap.MIN_JAVA, f"Java {major} at {java}")


def _jars(name: str, jar_set, s: Settings) -> Check:
    try:
        jars = bootstrap.jar_classpath(jar_set(), s.cache_dir)
    except bootstrap.SetupError as err:
        return Check(name, False, str(err))
    missing = [j.name for j in jars if not j.exists()]
    if missing:
        return Check(name, False, f"missing {missing}; run `make setup`")
    return Check(name, True, f"{len(jars)} jars in {jars[0].parent}")


def _writable(name: str, folder: Path) -> Check:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-check"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        return Check(name, False, f"{folder} is not writable: {err}")
    return Check(name, True, str(folder))


def _broker(s: Settings) -> Check:
    from obslab.broker import end_offsets

    try:
        topics = end_offsets(s, s.topics)
    except Exception as err:  # noqa: BLE001 - reported as a failed check
        return Check("kafka broker", False, f"{s.kafka_bootstrap_servers} does not answer ({err}); "
                     "run `obslab broker start`")
    missing = [t for t in s.topics if t not in topics]
    if missing:
        return Check("kafka broker", False, f"topics {missing} missing; run `obslab broker start`")
    return Check("kafka broker", True, f"{s.kafka_bootstrap_servers}: {', '.join(topics)}")
