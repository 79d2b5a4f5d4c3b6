"""CI installs with requirements/constraints.txt: every dependency pyproject.toml names, extras included, must be
pinned there to a version its specifier accepts, or the pinned install would fail (or silently ignore the change).
After changing the dependencies, re-run requirements/freeze.sh."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]


def pinned_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    return [Requirement(line) for line in lines if not line.startswith("xmodal[")]


def test_every_declared_dependency_is_pinned_to_a_version_it_accepts() -> None:
    pins = pinned_versions()
    problems = []
    for requirement in declared_requirements():
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not in requirements/constraints.txt")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement} does not accept the pinned {pinned}")
    assert not problems, "; ".join(problems) + ": re-run requirements/freeze.sh"
