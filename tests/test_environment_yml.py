"""environment.yml (the conda route) stays consistent with what `make setup` installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet

from obslab import bootstrap

ROOT = Path(__file__).resolve().parents[1]


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _conda_pins(env: dict) -> dict[str, str]:
    return dict(dep.split("=", 1) for dep in env["dependencies"] if isinstance(dep, str) and "=" in dep)


def test_python_is_one_the_project_accepts():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    python = _conda_pins(_environment())["python"]
    assert SpecifierSet(requires).contains(f"{python}.0"), (python, requires)
    # And the same interpreter the Makefile asks for.
    assert re.search(rf"^PYTHON \?= python{re.escape(python)}$", (ROOT / "Makefile").read_text(), re.M)


def test_java_meets_the_setup_minimum():
    assert int(_conda_pins(_environment())["openjdk"]) >= bootstrap.MIN_JAVA


def test_pip_installs_exactly_the_lock_and_the_project():
    pip = next(dep["pip"] for dep in _environment()["dependencies"] if isinstance(dep, dict))
    assert pip == [f"-r {bootstrap.LOCK_FILE.relative_to(ROOT)}", "-e ."]
    # The lock it names is the one setup installs from, and it pins every package it lists.
    lines = [ln for ln in bootstrap.LOCK_FILE.read_text().splitlines() if ln and not ln.startswith((" ", "#"))]
    unpinned = [ln for ln in lines if "==" not in ln and not ln.startswith("-")]
    assert lines and not unpinned, unpinned[:5]


def test_the_lock_satisfies_every_declared_dependency():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {}
    for line in bootstrap.LOCK_FILE.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(";")[0].strip().split("==")
            pinned[canonicalize_name(name.split("[")[0])] = version.strip()
    for text in project["dependencies"]:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is declared in pyproject.toml but not in requirements.lock"
        assert req.specifier.contains(pinned[name], prereleases=True), (text, pinned[name])
