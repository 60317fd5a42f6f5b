"""The workshop's exercises: each check fails on its starting point, saying what is wrong, and passes
on its reference solution (applied to a copy of the tree, never to this checkout).

Exercises 1, 2 and 4 edit a file in exercises/; their checks run in this process against a copy
whose lib/ is this checkout's. Exercise 3 edits the library, so its checks run the CLI in a fresh
process against a copy of lib/ with the solution's patch applied.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"


def _load_runner():
    """exercises/check.py as a module (under a name of its own: `check` is too common to import by)."""
    spec = importlib.util.spec_from_file_location("obslab_exercise_check", EXERCISES / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


exercise_check = _load_runner()

# exercise -> (its folder, the file the learner edits)
EDITED = {1: ("01_tune_threshold", "thresholds.yaml"), 2: ("02_new_detector", "detector.py"),
          4: ("04_say_less", "narrator.py")}


def tree(tmp_path: Path, number: int, solved: bool) -> Path:
    """A tree to check: this checkout's lib (linked), the exercise's folder, and the solution's file if solved."""
    root = tmp_path / ("solved" if solved else "start")
    folder, edited = EDITED[number]
    shutil.copytree(EXERCISES / folder, root / "exercises" / folder)
    (root / "lib").symlink_to(ROOT / "lib")
    if solved:
        shutil.copy(EXERCISES / "solutions" / f"{number:02d}" / edited, root / "exercises" / folder / edited)
    return root


def cli(number: int, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXERCISES / "check.py"), str(number), "--root", str(root)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("number, says", [
    pytest.param(1, "false incident", marks=pytest.mark.slow),  # the starting threshold is too low: noise pages
    (2, "were flagged"),  # the starting detector flags nothing
    (4, "not sure"),  # the starting narrator is as sure of thin evidence as of strong
])
def test_a_check_fails_on_the_starting_point_saying_why_and_passes_on_the_solution(tmp_path, number, says):
    start = exercise_check.run(number, tree(tmp_path, number, solved=False))
    assert start.problems, f"exercise {number}'s check passes on its starting point"
    assert any(says in p for p in start.problems), start.problems
    solved = exercise_check.run(number, tree(tmp_path, number, solved=True))
    assert solved.problems == [], f"exercise {number}'s check fails on its solution: {solved.problems}"


def test_the_cli_reports_without_a_traceback(tmp_path):
    start = cli(2, tree(tmp_path, 2, solved=False))
    assert start.returncode == 1
    assert "Not yet" in start.stdout and "Traceback" not in start.stdout + start.stderr
    solved = cli(2, tree(tmp_path, 2, solved=True))
    assert solved.returncode == 0 and "PASSED" in solved.stdout, solved.stdout + solved.stderr


def test_a_learner_error_is_one_line_naming_the_file_and_line(tmp_path):
    root = tree(tmp_path, 2, solved=False)
    path = root / "exercises" / "02_new_detector" / "detector.py"
    path.write_text(path.read_text().replace("            continue  # open windows",
                                             "            w.nothing  # a slip\n            continue  # open windows"))
    out = cli(2, root)
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "AttributeError" in out.stdout and "detector.py line" in out.stdout, out.stdout


def test_a_rate_only_detector_does_not_pass(tmp_path):
    """A detector that compares rates without the noise of the window's requests pages on a quiet service."""
    root = tree(tmp_path, 2, solved=False)
    path = root / "exercises" / "02_new_detector" / "detector.py"
    path.write_text(path.read_text().replace(
        "    found: list[Anomaly] = []\n",
        "    found: list[Anomaly] = []\n    seen: list[float] = []\n").replace(
        "        # TODO: compare",
        "        usual = sorted(seen)[len(seen) // 2] if seen else None\n"
        "        if usual is not None and len(seen) >= 5 and w.error_rate > 3 * max(usual, 0.001):\n"
        "            found.append(flag(w, usual, 3 * max(usual, 0.001)))\n"
        "            continue\n"
        "        seen.append(w.error_rate)\n"
        "        # TODO: compare"))
    problems = exercise_check.run(2, root).problems
    assert any("clean traffic of ledger" in p for p in problems), problems


def test_a_detector_that_learns_from_the_fault_does_not_pass(tmp_path):
    """The solution, but with flagged windows taught to its baseline: a long surge becomes the usual rate."""
    root = tree(tmp_path, 2, solved=True)
    path = root / "exercises" / "02_new_detector" / "detector.py"
    keep_out = "                continue  # a flagged window stays out of the baseline"
    assert keep_out in path.read_text()
    path.write_text(path.read_text().replace(keep_out, "                pass"))
    problems = exercise_check.run(2, root).problems
    assert any("learned from faulty windows" in p for p in problems), problems


# ---------------------------------------------------------------------------- the cheap wrong answers (issue 24)


def _edit(root: Path, number: int, old: str, new: str) -> None:
    """Replace `old` (which must be there) by `new` in the file the learner edits."""
    folder, edited = EDITED[number]
    path = root / "exercises" / folder / edited
    assert old in path.read_text(), f"{old!r} is no longer in {path.name}: update this test"
    path.write_text(path.read_text().replace(old, new))


def test_an_empty_thresholds_file_does_not_pass(tmp_path):
    """The library's default shift_z passes: an empty file must not, since nothing was measured."""
    root = tree(tmp_path, 1, solved=False)
    (root / "exercises" / "01_tune_threshold" / "thresholds.yaml").write_text("# nothing set\n")
    problems = exercise_check.run(1, root).problems
    assert len(problems) == 1 and "does not set shift_z" in problems[0], problems


@pytest.mark.slow
def test_a_passing_value_without_its_range_does_not_pass(tmp_path):
    root = tree(tmp_path, 1, solved=True)
    _edit(root, 1, "shift_z_range: [2.5, 10]", "")
    problems = exercise_check.run(1, root).problems
    assert len(problems) == 1 and "find the range of values that pass" in problems[0], problems


@pytest.mark.slow
def test_a_range_that_was_not_measured_does_not_pass(tmp_path):
    """[4, 6] holds only passing values, but 3.5 and 6.5 pass too: its ends were not looked for."""
    root = tree(tmp_path, 1, solved=True)
    _edit(root, 1, "shift_z_range: [2.5, 10]", "shift_z_range: [4, 6]")
    problems = exercise_check.run(1, root).problems
    assert any("shift_z=3.5 passes too" in p and "lower" in p for p in problems), problems
    assert any("shift_z=6.5 passes too" in p and "higher" in p for p in problems), problems


def test_a_fixed_threshold_with_a_made_up_baseline_does_not_pass(tmp_path):
    """`error_count >= 6 and error_rate > 0.08` passes the services whose usual rate is about 1 %; it pages all
    day on one that usually fails 10 % and never sees a surge on one that usually fails 0.2 %."""
    root = tree(tmp_path, 2, solved=False)
    _edit(root, 2, "        # TODO: compare", "        if w.error_count >= 6 and w.error_rate > 0.08:\n"
                                              "            found.append(flag(w, 0.01, 0.08))\n"
                                              "        # TODO: compare")
    problems = exercise_check.run(2, root).problems
    assert any(p.startswith("the error surge on auth") and "was missed" in p and "fixed rate" in p
               for p in problems), problems
    assert any("of legacy outside its surge were flagged" in p and "fixed threshold" in p for p in problems), problems


def _patched_library(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A tree whose lib/ has the solution's patch applied, then `old` replaced by `new` in generator/events.py."""
    root = _library_tree(tmp_path, name)
    patch = EXERCISES / "solutions" / "03" / "timeout.patch"
    done = subprocess.run(["patch", "-p1", "-d", str(root), "-i", str(patch)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    events = root / "lib" / "obslab" / "generator" / "events.py"
    assert old in events.read_text(), f"{old!r} is not in the patched events.py: update this test"
    events.write_text(events.read_text().replace(old, new))
    return root


def test_timeouts_that_end_as_500s_do_not_pass(tmp_path):
    root = _patched_library(tmp_path, "as-500", "codes = np.where(timed_out, 504, codes)",
                            "codes = np.where(timed_out, 500, codes)")
    out = cli(3, root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ended with 500" in out.stdout and "not 504" in out.stdout, out.stdout


def test_timeouts_drawn_from_the_global_random_state_do_not_pass(tmp_path):
    root = _patched_library(tmp_path, "global-rng", "hung = hit & (rng.random(n) < f.magnitude)",
                            "hung = hit & (np.random.random(n) < f.magnitude)")
    out = cli(3, root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "changed the global random state of np.random" in out.stdout, out.stdout
    assert "same seed gave different events" in out.stdout, out.stdout


EVERY_REASON = ('    because = (f"it rests on only {facts[\'requests\']} requests, its signal is barely past its '
                'threshold "\n               "and there is too little history before it to compare with")')


def test_one_hedge_listing_every_reason_for_every_unsure_incident_does_not_pass(tmp_path):
    """The solution's hedge, but naming all three reasons whatever the incident's facts say."""
    root = tree(tmp_path, 4, solved=True)
    _edit(root, 4, '    because = ", ".join(reasons[:-1]) + (" and " if len(reasons) > 1 else "") + reasons[-1]',
          EVERY_REASON)
    problems = exercise_check.run(4, root).problems
    assert any(p.startswith("search,") and "gives few requests as a reason" in p for p in problems), problems
    assert any(p.startswith("ledger,") and "gives a marginal signal as a reason" in p for p in problems), problems
    assert any("get the same summary" in p for p in problems), problems


def _library_tree(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(ROOT / "lib", root / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(EXERCISES / "03_fault_type", root / "exercises" / "03_fault_type")
    return root


def test_the_fault_type_check_fails_on_the_library_and_passes_with_the_solution_patch(tmp_path):
    start = cli(3, _library_tree(tmp_path, "start"))
    assert start.returncode == 1 and "type: timeout" in start.stdout, start.stdout + start.stderr
    solved = _library_tree(tmp_path, "solved")
    patch = EXERCISES / "solutions" / "03" / "timeout.patch"
    patched = subprocess.run(["patch", "-p1", "-d", str(solved), "-i", str(patch)], capture_output=True, text=True)
    assert patched.returncode == 0, f"the solution patch no longer applies to lib/: {patched.stdout}{patched.stderr}"
    out = cli(3, solved)
    assert out.returncode == 0 and "PASSED" in out.stdout, out.stdout + out.stderr


def test_a_fault_type_the_scenario_accepts_but_the_events_ignore_does_not_pass(tmp_path):
    root = _library_tree(tmp_path, "half")
    patch = (EXERCISES / "solutions" / "03" / "timeout.patch").read_text()
    scenario_only = "diff -ru" + patch.split("diff -ru")[3]  # the patch's hunks of scenario.py alone
    assert "generator/scenario.py" in scenario_only.splitlines()[0]
    done = subprocess.run(["patch", "-p1", "-d", str(root)], input=scenario_only, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = cli(3, root)
    assert out.returncode == 1 and "failed with 504" in out.stdout, out.stdout + out.stderr


def test_the_starting_points_do_not_use_the_solutions():
    for path in EXERCISES.rglob("*"):
        if path.is_file() and "solutions" not in path.parts and path.suffix in (".py", ".yaml"):
            assert "solutions" not in path.read_text(), f"{path} refers to the solutions"
