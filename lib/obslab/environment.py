"""Checks that the lab's environment is complete: what `obslab doctor` and notebook 00 show."""

from __future__ import annotations

import importlib.util
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
    full_lab_only: bool = False  # needed by `make setup`'s lab (Kafka, Spark), not by the exercises


def light_set_up() -> bool:
    """This environment is the light set-up (`make exercises`): pyspark is not installed."""
    return importlib.util.find_spec("pyspark") is None


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


def blocking(checks: list[Check], light: bool | None = None) -> list[str]:
    """Names of the failed checks that stop this set-up: on the light set-up (`light`, default: detected)
    a check only the full lab needs does not, since the exercises and notebooks 01, 03-06 do without it."""
    light = light_set_up() if light is None else light
    return [c.name for c in checks if not c.ok and not (light and c.full_lab_only)]


def verdict(checks: list[Check], light: bool | None = None) -> str:
    """One line for notebook 00 and `obslab doctor` when nothing blocks: what this set-up can run."""
    light = light_set_up() if light is None else light
    if not light:
        return "all checks passed"
    skipped = [c.name for c in checks if not c.ok and c.full_lab_only]
    return ("light set-up (make exercises): ready for the exercises and notebooks 01, 03-06"
            + (f"; {', '.join(skipped)} only matter for the full lab (make setup)" if skipped else ""))


def _java() -> Check:
    java = bootstrap.find_java()
    major = bootstrap.java_major_version(java)
    if major is None:
        return Check("java", False, f"no Java at {java}: install OpenJDK 17+ or set JAVA_HOME", full_lab_only=True)
    return Check("java", major >= bootstrap.MIN_JAVA, f"Java {major} at {java}", full_lab_only=True)


def _jars(name: str, jar_set, s: Settings) -> Check:
    try:
        jars = bootstrap.jar_classpath(jar_set(), s.cache_dir)
    except bootstrap.SetupError as err:
        return Check(name, False, str(err), full_lab_only=True)
    missing = [j.name for j in jars if not j.exists()]
    if missing:
        return Check(name, False, f"missing {missing}; run `make setup`", full_lab_only=True)
    return Check(name, True, f"{len(jars)} jars in {jars[0].parent}", full_lab_only=True)


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
                     "run `obslab broker start`", full_lab_only=True)
    missing = [t for t in s.topics if t not in topics]
    if missing:
        return Check("kafka broker", False, f"topics {missing} missing; run `obslab broker start`", full_lab_only=True)
    return Check("kafka broker", True, f"{s.kafka_bootstrap_servers}: {', '.join(topics)}", full_lab_only=True)
