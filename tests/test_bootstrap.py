import os
import stat

import pytest

from obslab import bootstrap


def _fake_java(tmp_path, version_line: str):
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return home


@pytest.mark.parametrize(
    "line, major",
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),  # modern scheme
        ('openjdk version "21" 2023-09-19', 21),  # no minor part
        ('java version "1.8.0_381"', 8),  # legacy 1.x scheme means Java 8
    ],
)
def test_java_version_is_parsed(tmp_path, line, major):
    assert bootstrap.java_major_version(str(_fake_java(tmp_path, line) / "bin" / "java")) == major


def test_old_java_stops_setup_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, 'openjdk version "11.0.2"')))
    with pytest.raises(bootstrap.SetupError, match=r"Java 11.*need Java 17.*openjdk-17"):
        bootstrap.step_java()


def test_missing_java_stops_setup_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(bootstrap.SetupError, match="no Java runtime found.*install it"):
        bootstrap.step_java()


def test_setup_stops_at_once_without_java(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    assert bootstrap.main([]) == 1
    err = capsys.readouterr().err
    assert "java FAILED" in err  # the first step fails; nothing after it runs


@pytest.mark.parametrize(
    "jar, name",
    [
        ("kafka-clients-3.9.2.jar", "kafka-clients"),
        ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "spark-sql-kafka-0-10_2.13"),  # digits in the name stay
        ("zstd-jni-1.5.7-17.jar", "zstd-jni"),
        ("scala-library-2.13.18.jar", "scala-library"),
    ],
)
def test_artifact_name_drops_the_version(jar, name):
    assert bootstrap._artifact_name(jar) == name


def test_setup_is_complete_and_idempotent():
    # `make setup` has run (CI runs it first): a second run of every step changes nothing.
    for name, func in bootstrap.STEPS:
        message = func()
        assert not message.startswith(("created", "installed", "registered")), (name, message)
    assert os.path.exists(bootstrap.VENV / ".obslab-lock.sha256")
