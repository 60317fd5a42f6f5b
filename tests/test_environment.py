"""The environment checks `obslab doctor` runs, against a fresh data folder and an empty jar cache."""

from obslab.environment import check_environment
from obslab.settings import load_settings


def test_the_checks_name_each_part_and_a_missing_jar_cache_says_to_run_setup(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "empty-cache")
    checks = {c.name: c for c in check_environment(settings)}
    assert list(checks) == ["python", "java", "kafka broker jars", "spark kafka connector", "data dir"]
    assert checks["python"].ok  # the lab runs on Python 3.11
    for jars in ("kafka broker jars", "spark kafka connector"):
        assert not checks[jars].ok and "make setup" in checks[jars].detail
    assert checks["data dir"].ok and (tmp_path / "data").is_dir()  # created if missing
    assert list((tmp_path / "data").iterdir()) == []  # the write probe is removed


def test_a_data_dir_that_cannot_be_written_fails_its_check(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = load_settings(data_dir=tmp_path / "d", cache_dir=tmp_path / "cache")
    settings = settings.model_copy(update={"data_dir": blocker / "data"})  # a folder inside a file
    [data] = [c for c in check_environment(settings) if c.name == "data dir"]
    assert not data.ok and "is not writable" in data.detail


def test_on_the_light_set_up_only_what_the_exercises_need_blocks(tmp_path):
    from obslab.environment import blocking, light_set_up, verdict

    settings = load_settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "empty-cache")  # no jars cached
    checks = check_environment(settings)
    # The full lab: the missing jars block, and this venv has pyspark, so it is not the light set-up.
    assert not light_set_up()
    assert blocking(checks) == blocking(checks, light=False) == ["kafka broker jars", "spark kafka connector"]
    # The light set-up: the exercises and notebooks 01, 03-06 need no jars, so nothing blocks, and it says why.
    assert blocking(checks, light=True) == []
    said = verdict(checks, light=True)
    assert said.startswith("light set-up (make exercises): ready") and "kafka broker jars" in said
    # A data folder that cannot be written blocks either set-up.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    unwritable = check_environment(settings.model_copy(update={"data_dir": blocker / "data"}))
    assert "data dir" in blocking(unwritable, light=True)
