"""Every module, notebook and DAG at least loads."""

import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import obslab

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(m.name for m in pkgutil.walk_packages(obslab.__path__, "obslab."))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    assert importlib.import_module(name).__name__ == name


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_valid_json_without_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    # Notebooks are committed without outputs (STYLE.md); tests execute them instead.
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
