"""Dependency vulnerability audit of requirements/ci.lock (issue #7): fails on any known vulnerability.

1. pip-audit, with its default service (PyPI's per-release JSON API).
2. Where pip-audit could not look a release up (CI machines reach the package registry's project
   pages but not always its per-release API or OSV), PyPI's project page lists the vulnerabilities
   of the latest release: a pin equal to the latest release is audited from there.
3. What neither could audit is listed by name, never passed over in silence.

Exit 1 if a vulnerability is known; 0 otherwise, with the counts printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements" / "ci.lock"


def _pip_audit() -> list[dict]:
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "-r",
                str(LOCK),
                "--no-deps",
                "--disable-pip",
                "--format",
                "json",
                "--progress-spinner",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        print("pip-audit did not finish in 5 minutes")
        return [{"name": n, "version": v, "skip_reason": "pip-audit timed out"} for n, v in _pins().items()]
    try:
        return list(json.loads(done.stdout)["dependencies"])
    except (ValueError, KeyError):
        print(f"pip-audit gave no report (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        return [{"name": n, "version": v, "skip_reason": "pip-audit failed"} for n, v in _pins().items()]


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.split(";")[0].strip().partition("==")
            pins[name.lower()] = version.strip()
    return pins


def _latest_vulnerabilities(name: str) -> tuple[str, list[dict]]:
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=30) as answer:
        data = json.load(answer)
    return str(data["info"]["version"]), [v for v in data.get("vulnerabilities") or [] if not v.get("withdrawn")]


def _safely(name: str) -> tuple[str, list[dict]] | str:
    try:
        return _latest_vulnerabilities(name)
    except (OSError, ValueError, KeyError) as exc:
        return type(exc).__name__


def main() -> int:
    pins = _pins()
    found: list[str] = []
    by_pip_audit = by_project_page = 0
    not_audited: list[str] = []
    report = _pip_audit()
    skipped = [str(d["name"]).lower() for d in report if "skip_reason" in d]
    with ThreadPoolExecutor(8) as pool:
        pages = dict(zip(skipped, pool.map(_safely, skipped), strict=True))
    for dep in report:
        name, version = str(dep["name"]).lower(), pins.get(str(dep["name"]).lower(), str(dep.get("version", "")))
        if "skip_reason" not in dep:
            by_pip_audit += 1
            found += [
                f"{name}=={version}: {v['id']} (fixed in {', '.join(v.get('fix_versions', [])) or '?'})"
                for v in dep.get("vulns", [])
            ]
            continue
        page = pages[name]
        if isinstance(page, str):
            not_audited.append(f"{name}=={version} ({page})")
            continue
        latest, vulns = page
        if latest != version:
            not_audited.append(f"{name}=={version} (latest is {latest})")
            continue
        by_project_page += 1
        found += [f"{name}=={version}: {v['id']} (fixed in {', '.join(v.get('fixed_in', [])) or '?'})" for v in vulns]
    print(
        f"dependency audit of {len(pins)} pinned releases: {by_pip_audit} by pip-audit, "
        f"{by_project_page} from PyPI's project pages, {len(not_audited)} not audited, "
        f"{len(found)} known vulnerabilities"
    )
    for item in not_audited:
        print(f"  not audited: {item}")
    for item in found:
        print(f"  VULNERABLE: {item}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
