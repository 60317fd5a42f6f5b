"""tests/ mirrors lib/obslab: every module has its own test file, tests/<subpackage>/test_<module>.py,
with at least one test that `make test-fast` runs (marked neither kafka, spark nor slow)."""

import ast
from pathlib import Path

import obslab

PACKAGE = Path(obslab.__file__).parent
TESTS = Path(__file__).parent
NOT_FAST = {"kafka", "spark", "slow"}  # what `make test-fast` deselects

# Modules without a test file of their own, each with the reason. Glue only; keep it short.
# (Package __init__ files are not listed: they hold a docstring and at most a few re-exports.)
ALLOWED_WITHOUT_TESTS: dict[str, str] = {}


def _marks(node: ast.expr) -> set[str]:
    """The names X of every `pytest.mark.X` (called or not) inside an expression."""
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "mark"}


def fast_tests(path: Path) -> list[str]:
    """The test functions of a file that no kafka, spark or slow mark keeps out of `make test-fast`."""
    tree = ast.parse(path.read_text())
    module_marks = set().union(*(_marks(n.value) for n in tree.body if isinstance(n, ast.Assign)
                                 and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)))
    if module_marks & NOT_FAST:
        return []
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    functions += [f for c in tree.body if isinstance(c, ast.ClassDef) and c.name.startswith("Test")
                  for f in c.body if isinstance(f, ast.FunctionDef)]
    return [f.name for f in functions if f.name.startswith("test_")
            and not set().union(*map(_marks, f.decorator_list)) & NOT_FAST]


def mirrored(module: Path) -> Path:
    """lib/obslab/<sub>/<name>.py -> tests/<sub>/test_<name>.py"""
    relative = module.relative_to(PACKAGE)
    return TESTS / relative.parent / f"test_{relative.name}"


def test_every_module_has_a_fast_test_file_of_its_own():
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert len(modules) > 20  # the walk found the package
    missing = [f"{m.relative_to(PACKAGE)}: no {mirrored(m).relative_to(TESTS.parent)}" for m in modules
               if str(m.relative_to(PACKAGE)) not in ALLOWED_WITHOUT_TESTS and not mirrored(m).is_file()]
    slow_only = [f"{m.relative_to(PACKAGE)}: every test in {mirrored(m).relative_to(TESTS.parent)} is kafka, "
                 "spark or slow" for m in modules if mirrored(m).is_file() and not fast_tests(mirrored(m))]
    assert not missing + slow_only, "\n".join(missing + slow_only)


def test_the_check_reads_marks_as_pytest_does(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\n"
        "@pytest.mark.spark\ndef test_a(): pass\n"
        "@pytest.mark.parametrize('x', [1])\n@pytest.mark.slow\ndef test_b(x): pass\n"
        "@pytest.mark.parametrize('x', [1])\ndef test_c(x): pass\n"
        "def helper(): pass\n"
        "class TestD:\n    def test_e(self): pass\n")
    assert fast_tests(sample) == ["test_c", "test_e"]
    sample.write_text("import pytest\npytestmark = [pytest.mark.kafka]\ndef test_a(): pass\n")
    assert fast_tests(sample) == []
