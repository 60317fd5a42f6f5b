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
