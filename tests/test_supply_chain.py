"""Supply chain (issue #7, point 5): CI installs the exact versions of requirements/ci.lock, and
the lock still satisfies what pyproject.toml asks for (a stale lock fails here, not in CI)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    """The lock's pins, read as .ci/audit.py reads them (one parser of the lock)."""
    spec = importlib.util.spec_from_file_location("ci_audit", REPO / ".ci" / "audit.py")
    assert spec is not None and spec.loader is not None
    audit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(audit)
    return {canonicalize_name(name): version for name, version in audit._pins().items()}


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
