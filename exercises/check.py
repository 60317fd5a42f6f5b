"""`make check-exercise N`: judge the learner's work on exercise N by what it does, and say what is still wrong.

    python exercises/check.py N [--root DIR]
    python exercises/check.py all [--root DIR]     # one line per exercise: a quick poll of the room

DIR (default: OBSLAB_EXERCISE_ROOT, else this checkout) is the tree whose exercise files, and whose
lib/obslab (exercise 3 edits the library), are checked; the checks themselves are always this
file's. Exit status 0: solved; 1: still something to do (listed); 2: the check could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXERCISES = {1: "01_tune_threshold", 2: "02_new_detector", 3: "03_fault_type", 4: "04_say_less"}


def run(number: int, root: Path, **extra) -> "harness.Result":  # noqa: F821 - imported below
    """The check of one exercise against the tree at `root` (in this process)."""
    import importlib.util

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import harness

    harness.use_tree(root)
    folder = EXERCISES[number]
    spec = importlib.util.spec_from_file_location(f"exercise_check_{number}", HERE / folder / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with tempfile.TemporaryDirectory(prefix=f"obslab-exercise-{number}-") as scratch:
        try:
            return module.check(root / "exercises" / folder, Path(scratch), **extra)
        except harness.LearnerError as err:
            return harness.Result(problems=[str(err)])
        except Exception as err:  # noqa: BLE001 - e.g. a library file the learner broke (exercise 3)
            return harness.Result(problems=[f"the check could not run: {harness.innermost(err, root)}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = ", ".join(f"{n} ({f})" for n, f in EXERCISES.items())
    parser.add_argument("number", nargs="?", help=f"the exercise: {choices}; or `all`, one line each")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("OBSLAB_EXERCISE_ROOT") or HERE.parent),
                        help="the tree to check (env OBSLAB_EXERCISE_ROOT; default: this checkout)")
    args = parser.parse_args(argv)
    if args.number == "all":
        return check_all(args.root.resolve())
    if args.number is None or not args.number.isdigit() or int(args.number) not in EXERCISES:
        print(f"Which exercise? Run `make check-exercise N` with N one of {sorted(EXERCISES)}, "
              f"or `all` (got {args.number!r}).", file=sys.stderr)
        return 2
    number = int(args.number)
    root = args.root.resolve()
    if not (root / "exercises" / EXERCISES[number]).is_dir() or not (root / "lib" / "obslab").is_dir():
        print(f"{root} is not an obslab checkout with exercises/{EXERCISES[number]}/ and lib/obslab/.", file=sys.stderr)
        return 2
    print(f"Checking exercise {number} ({EXERCISES[number]}) in {root} ...", flush=True)
    result = run(number, root)
    for note in result.notes:
        print(f"  {note}")
    if result.problems:
        print(f"\nNot yet: exercise {number} has {len(result.problems)} thing(s) to fix:")
        for problem in result.problems:
            print(f"  - {problem}")
        print(f"\nSee exercises/{EXERCISES[number]}/README.md; run `make check-exercise {number}` again when done.")
        return 1
    print(f"\nPASSED: exercise {number} is solved.")
    return 0


def check_all(root: Path) -> int:
    """One line per exercise (`exercise 2: not yet, 3 thing(s) to fix`); 0 only when all are solved."""
    if not (root / "lib" / "obslab").is_dir():
        print(f"{root} is not an obslab checkout with lib/obslab/.", file=sys.stderr)
        return 2
    solved = 0
    for number, folder in EXERCISES.items():
        if not (root / "exercises" / folder).is_dir():
            print(f"exercise {number}: missing, no exercises/{folder}/ in {root}", flush=True)
            continue
        problems = run(number, root).problems
        solved += not problems
        verdict = f"not yet, {len(problems)} thing(s) to fix" if problems else "PASSED"
        print(f"exercise {number}: {verdict}", flush=True)
    print(f"{solved} of {len(EXERCISES)} solved; `make check-exercise N` lists what is left in exercise N.")
    return 0 if solved == len(EXERCISES) else 1


if __name__ == "__main__":
    sys.exit(main())
