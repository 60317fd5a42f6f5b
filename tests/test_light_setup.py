"""The light set-up (`make exercises`) from a fresh clone: the exercise checks and the notebooks that need
no broker run in it, and it holds none of the heavy parts (pyspark proves it).

The clone is of this checkout's committed HEAD, so what CI tests is what a participant clones. uv's
cache is the usual one (warm on CI); bench/bench_exercises_setup.py times it with a cold cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The notebooks that need no broker, Spark or model: 00 (its verdict: ready for the exercises), 01 (a JSONL
# file), and 03-06 (they replay a scratch store offline).
OFFLINE_NOTEBOOKS = ("00_environment_check", "01_generate_events", "03_detect_anomalies", "04_narrate_incidents",
                     "05_explore_metrics", "06_evaluate_detection")


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def light_clone(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh clone of HEAD with `make exercises` done in it."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    clone = tmp_path_factory.mktemp("light") / "obslab"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
    # Nothing of this run's venv or settings leaks into the clone's (a participant has neither).
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")
           and not k.startswith(("OBSLAB_", "KAFKA_", "DATA_DIR", "TOPIC_"))}
    done = _run(["make", "exercises"], clone, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "light setup done" in done.stdout
    return clone, env


@pytest.mark.slow
def test_light_venv_holds_no_spark_kafka_or_airflow(light_clone):
    clone, env = light_clone
    probe = ("import importlib.util as u; "
             "print(' '.join(m for m in ('pyspark', 'kafka', 'confluent_kafka', 'airflow', 'llama_cpp', 'streamlit') "
             "if u.find_spec(m)))")
    found = _run([str(clone / ".venv" / "bin" / "python"), "-c", probe], clone, env)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "", f"the light venv has {found.stdout.strip()}"
    # ... yet it runs obslab from the clone (editable) with the notebooks' kernel registered.
    where = _run([str(clone / ".venv" / "bin" / "python"), "-c", "import obslab; print(obslab.__file__)"], clone, env)
    assert where.stdout.strip().startswith(str(clone / "lib" / "obslab")), where.stdout + where.stderr
    assert (clone / ".venv" / "share" / "jupyter" / "kernels" / "obslab" / "kernel.json").exists()


@pytest.mark.slow
def test_check_exercise_all_polls_every_exercise(light_clone):
    clone, env = light_clone
    polled = _run(["make", "check-exercise", "all"], clone, env)
    # The starting points solve nothing: the check exits 1 (make reports it as its own failure).
    assert polled.returncode != 0 and "Error 1" in polled.stderr, polled.stdout[-2000:] + polled.stderr[-2000:]
    lines = [line for line in polled.stdout.splitlines() if line.startswith("exercise ")]
    assert [line.split(":")[0] for line in lines] == [f"exercise {n}" for n in (1, 2, 3, 4)], polled.stdout
    assert all(": not yet, " in line and line.endswith("thing(s) to fix") for line in lines), lines
    assert "exercise 2: not yet, 3 thing(s) to fix" in lines
    assert "0 of 4 solved" in polled.stdout
    # The light set-up ran again first, and found everything in place.
    assert "exercise-deps: exercise dependencies already installed" in polled.stdout


@pytest.mark.slow
@pytest.mark.parametrize("notebook", OFFLINE_NOTEBOOKS)
def test_offline_notebook_runs_on_the_light_setup(light_clone, notebook):
    clone, env = light_clone
    # The clone's own pytest in the light venv, its data folder the clone's (scratch). Without the
    # conftest files: the root one starts a Kafka broker before any notebook, which the light set-up
    # cannot (no Java, no jars); these notebooks run as a participant's Run All does, on the defaults.
    ran = _run([str(clone / ".venv" / "bin" / "python"), "-m", "pytest", "--nbval-lax", "--noconftest", "-q",
                "-p", "no:cacheprovider", f"notebooks/{notebook}.ipynb"], clone, env)
    assert ran.returncode == 0, f"{notebook} failed on the light set-up:\n{ran.stdout[-4000:]}\n{ran.stderr[-2000:]}"


def test_check_all_says_one_line_per_exercise(tmp_path):
    # A tree with exercise 2 solved (its reference solution), 4 at its starting point, 1 and 3 absent.
    (tmp_path / "lib").symlink_to(ROOT / "lib")
    for folder in ("02_new_detector", "04_say_less"):
        shutil.copytree(ROOT / "exercises" / folder, tmp_path / "exercises" / folder)
    shutil.copy(ROOT / "exercises" / "solutions" / "02" / "detector.py", tmp_path / "exercises" / "02_new_detector")
    polled = subprocess.run([sys.executable, str(ROOT / "exercises" / "check.py"), "all", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert polled.returncode == 1, polled.stdout + polled.stderr  # not all solved
    lines = polled.stdout.splitlines()
    assert lines[0].startswith("exercise 1: missing")
    assert lines[1] == "exercise 2: PASSED"
    assert lines[2].startswith("exercise 3: missing")
    assert lines[3].startswith("exercise 4: not yet, ") and lines[3].endswith(" thing(s) to fix")
    assert lines[4].startswith("1 of 4 solved")
    assert "Traceback" not in polled.stderr


def test_check_all_on_a_folder_that_is_no_checkout_says_so(tmp_path):
    polled = subprocess.run([sys.executable, str(ROOT / "exercises" / "check.py"), "all", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert polled.returncode == 2 and "not an obslab checkout" in polled.stderr
