"""Supply chain (issue #7, point 5): CI installs the exact versions of requirements/ci.lock, and
the lock still satisfies what pyproject.toml asks for (a stale lock fails here, not in CI)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "ci.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.split(";")[0].strip().partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_dependency_is_pinned_to_a_version_pyproject_allows() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/ci.lock: run pip-compile (see its header)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(requirement))


def test_ci_installs_from_the_lock_and_audits_it() -> None:
    command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert "-c requirements/ci.lock" in command and ".ci/audit.py" in command
    assert command in (REPO / "README.md").read_text()  # the README's test command is what CI runs
