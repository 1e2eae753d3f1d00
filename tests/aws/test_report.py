"""Issue #16: `kmsaudit report --html FILE` — one self-contained file an auditor can file, looked
at in a real headless Chromium: the counts are in the DOM, the filters ran, nothing was fetched.
Issue #27: at 1,280 px nothing is cut and nothing scrolls sideways; the drift of the period, the
accepted access with its owner, and the account names of `[names]` are there to read."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from estate import A, B, Estate, client, config_text, key_policy, role

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
    done = _chromium("--window-size=1280,1000", f"--screenshot={shot}", path.as_uri())
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


PARTNER = "555566667777"
# Appended to a copy of the report (never to the report itself): writes, once the page is laid
# out at the window's width, the page's scroll width and the element reaching furthest right.
PROBE = """<script>window.addEventListener("load", function () {
  var widest = 0, who = "";
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.right > widest) { widest = r.right; who = el.tagName + "." + el.className; }
  });
  var out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth, widest: Math.ceil(widest), who: who});
  document.body.appendChild(out);
});</script>"""


def _laid_out_at_1280(path: Path, tmp_path: Path) -> dict[str, object]:
    probe = tmp_path / f"probe-{path.name}"
    probe.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium("--window-size=1280,1000", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="probe">([^<]*)</pre>', dom.stdout)
    assert found, dom.stdout[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.fixture
def audited(tmp_path: Path, estate: Estate, aws: str) -> tuple[Path, dict[str, object]]:
    """Two scans with a change between them (a partner gains a key), `[names]`, one finding
    accepted (the entry `kmsaudit accept` prints) and one entry long expired."""
    config = tmp_path / "k.toml"
    names = f'\n[names]\n"{A}" = "payments-prod"\n"{B}" = "analytics"\n"{PARTNER}" = "partner-co"\n'
    config.write_text(config_text(store=str(tmp_path / "k.db")) + names)
    assert _kmsaudit("scan", "--config", str(config), aws=aws).returncode == 0
    findings = json.loads(_kmsaudit("findings", "--config", str(config), "--format", "json", aws=aws).stdout)
    chosen = next(f for f in findings if f["access"] == "potential" and f["principal"] == f"arn:aws:iam::{B}:root")
    entry = _kmsaudit(
        "accept", chosen["id"], "--config", str(config), "--reason", "analytics reads shared data",
        "--owner", "team-data", "--expires", "2027-06-30", "--ticket", "SEC-142", "--id", "analytics-shared", aws=aws,
    )  # fmt: skip
    assert entry.returncode == 0, entry.stderr
    expired = entry.stdout.replace("analytics-shared", "old-vendor").replace("2027-06-30", "2026-01-31")
    config.write_text(config.read_text() + "\n" + entry.stdout + "\n" + expired)
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["narrowed"],
        PolicyName="default",
        Policy=key_policy(
            A,
            {"Effect": "Allow", "Principal": {"AWS": role(B, "Reader")}, "Action": "kms:Decrypt", "Resource": "*"},
            {"Sid": "Partner", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{PARTNER}:root"},
             "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"},
        ),
    )  # fmt: skip
    assert _kmsaudit("scan", "--config", str(config), aws=aws).returncode == 0
    out = _kmsaudit("report", "--config", str(config), "--html", str(tmp_path / "audited.html"), aws=aws)
    assert out.returncode == 0, out.stderr
    return tmp_path / "audited.html", chosen


def _section(html: str, element_id: str) -> str:
    part = html.split(f'id="{element_id}"', 1)[1].split("</table>", 1)[0]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", part)).replace("&#34;", '"')


def test_the_report_says_what_drifted_who_accepted_what_and_whose_accounts(
    audited: tuple[Path, dict[str, object]], estate: Estate
) -> None:
    html = audited[0].read_text()
    drift = _section(html, "drift")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC high added", drift)  # when, severity, what
    assert f"{estate.keys['narrowed']} arn:aws:iam::{PARTNER}:root partner-co {PARTNER}" in drift
    assert "— → Decrypt, DescribeKey (potential) +Decrypt +DescribeKey" in drift  # before → after
    accepted = _section(html, "accepted")
    assert f"arn:aws:iam::{B}:root analytics {B}" in accepted
    assert "analytics-shared team-data analytics reads shared data 2027-06-30 SEC-142" in accepted
    assert "expired (their findings alert again): old-vendor (team-data, expired 2026-01-31, SEC-142)" in (
        _section(html, "expired-entries")  # the expired entry, marked
    )
    assert f"payments-prod {A}" in _section(html, "matrix")  # names beside ids
    assert re.search(r"worst (critical|high|medium|low) · \d+ findings?", _section(html, "matrix"))
    assert 'id="legend"' in html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it where it can)")
def test_at_1280_px_nothing_is_cut_and_nothing_scrolls_sideways(
    audited: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    from kmsaudit.formats.report import render_report
    from kmsaudit.model import Finding

    layout = _laid_out_at_1280(audited[0], tmp_path)
    assert layout["innerWidth"] == 1280
    assert int(layout["scrollWidth"]) <= 1280, layout  # type: ignore[call-overload]
    assert int(layout["widest"]) <= 1280, layout  # type: ignore[call-overload]
    # The worst case: 300-character role paths, a dozen conditions, every region of a partition.
    long = "arn:aws:iam::444455556666:role/" + "/".join(["a-very-long-path-segment"] * 12) + "/Reader"
    conditions = tuple(
        {"source": "key-policy", "sid": "S" * 40, "effect": "Allow", "operator": "StringEquals",
         "key": f"kms:EncryptionContext:{'tenant' * 8}{i}", "values": ["x" * 120]}
        for i in range(12)
    )  # fmt: skip
    key = "arn:aws:kms:us-east-1:111122223333:key/mrk-" + "0123456789abcdef" * 2
    finding = Finding(key, "111122223333", "us-east-1", long, "444455556666", "effective", "external",
                      ("grant", "iam-policy", "key-policy"), tuple(f"kms:Action{i}" for i in range(20)), True,
                      conditions, "medium")  # fmt: skip
    regions = [f"xx-region-{i}" for i in range(17)]
    scopes = [type("S", (), {"account": "111122223333", "region": r, "ok": True, "error_code": ""})() for r in regions]
    snapshot = {"id": 1, "finished_at": 1.79e9, "complete": True}
    worst = tmp_path / "worst.html"
    worst.write_text(
        render_report([finding], scopes, snapshot, [], {}, "f" * 16, account_names={"111122223333": "n" * 90})
    )
    layout = _laid_out_at_1280(worst, tmp_path)
    assert int(layout["scrollWidth"]) <= 1280, layout  # type: ignore[call-overload]
