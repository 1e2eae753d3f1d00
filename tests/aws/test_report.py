"""Issue #16: `kmsaudit report --html FILE` — one self-contained file an auditor can file, looked
at in a real headless Chromium: the counts are in the DOM, the filters ran, nothing was fetched."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from estate import Estate, config_text

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _kmsaudit(*args: str, aws: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsaudit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ENDPOINT_URL": aws},
    )


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def report(tmp_path: Path, estate: Estate, aws: str) -> tuple[Path, list[dict[str, object]]]:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    assert _kmsaudit("scan", "--config", str(config), "--format", "json", aws=aws).returncode == 0
    findings = json.loads(_kmsaudit("findings", "--config", str(config), "--format", "json", aws=aws).stdout)
    out = _kmsaudit("report", "--config", str(config), "--html", str(tmp_path / "report.html"), aws=aws)
    assert out.returncode == 0, out.stderr
    assert re.match(r"report of snapshot 1 \(\d+ findings, 0 drift events in 30 days\) written to ", out.stdout)
    return tmp_path / "report.html", findings


def test_the_report_is_self_contained(report: tuple[Path, list[dict[str, object]]]) -> None:
    html = report[0].read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no outside resource
    assert "<script src" not in html and "@import" not in html and "url(" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it where it can)")
def test_chromium_renders_the_counts_and_runs_the_filters(
    report: tuple[Path, list[dict[str, object]]], tmp_path: Path
) -> None:
    path, findings = report
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert re.search(rf'id="total-findings">{len(findings)}<', text)
    for severity in ("critical", "high", "medium", "low"):
        n = sum(f["severity"] == severity for f in findings)
        assert re.search(rf'id="count-{severity}" data-count="{n}">{n} {severity}<', text)
    # The filter script ran in the browser (the count is written by it, not by the template).
    assert f'id="shown">{len(findings)} of {len(findings)} shown<' in text
    assert text.count('class="finding') == len(findings)
    shot = tmp_path / "report.png"
    done = _chromium("--window-size=1400,1000", f"--screenshot={shot}", path.as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 10_000  # a picture, not an empty page


def test_values_from_aws_cannot_inject_markup() -> None:
    from kmsaudit.formats.report import render_report
    from kmsaudit.model import Finding

    hostile = "arn:aws:iam::444455556666:role/<img src=x onerror=alert(1)>"
    finding = Finding(
        "arn:aws:kms:us-east-1:111122223333:key/k1",
        "111122223333",
        "us-east-1",
        hostile,
        "444455556666",
        "effective",
        "external",
        ("grant",),
        ("kms:Decrypt",),
        False,
        (),
        "high",
    )
    html = render_report([finding], [], {"id": 1, "finished_at": 1.79e9, "complete": True}, [], {}, "f" * 16)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
