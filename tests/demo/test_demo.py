"""`kmsaudit demo` runs to the end non-interactively and shows the whole product (issue #6)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import get_until


def _serve_until_scraped(proc: subprocess.Popen[str]) -> str:
    """Read the demo's output up to the daemon's start, scrape /metrics once the daemon has
    scanned, then stop it with SIGTERM; returns what the demo printed."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Serving /metrics"):
            break
    else:
        raise AssertionError("the demo never started serving:\n" + "".join(lines[-20:]))
    _, metrics = get_until("http://127.0.0.1:9465/metrics", lambda status, body: "kmsaudit_findings{" in body)
    assert "kmsaudit_findings{" in metrics, "the daemon never exported its findings"
    assert re.search(r'^kmsaudit_keys\{account="\d{12}",region="eu-west-1"\} \d', metrics, re.M)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0  # SIGTERM is a clean stop
    return "".join(lines) + rest


@pytest.mark.xdist_group("port-9465")  # both serve the README's 127.0.0.1:9465: never at once
def test_demo_shows_findings_drift_and_the_delivered_alert_then_serves(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsaudit", "demo", "--dir", str(tmp_path / "demo"), "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        out = _serve_until_scraped(proc)
    finally:
        proc.kill()
    scan1 = out.split("== Scan 1")[1].split("== A change")[0]
    # The four kinds of access, each where the seeded estate puts it.
    assert re.search(r"^high +public +external +\* .*kms:ViaService=secretsmanager", scan1, re.M)
    assert re.search(r"^high +potential +external +arn:aws:iam::555566667777:root", scan1, re.M)
    assert re.search(r"^low +effective +trusted +arn:aws:iam::\d{12}:role/Reader +iam-policy\+key-policy", scan1, re.M)
    assert re.search(r"^medium +effective +external +arn:aws:iam::555566667777:role/Ingest +grant", scan1, re.M)
    assert "role/DataSci" not in scan1  # an IAM role that does not delegate the key has no access
    assert "40 keys in 12 scopes" in scan1
    # SPEC §2.8, §2.11: AWS services acting for the key's own account are not external access.
    assert "logs.us-east-1.amazonaws.com" not in scan1.split("Not cross-account")[0]
    assert "rds.us-east-1.amazonaws.com" not in scan1.split("Not cross-account")[0]
    assert re.search(r"^Not cross-account \(lint service-grant\): .*rds\.us-east-1\.amazonaws\.com", scan1, re.M)
    drift = out.split("== Scan 2")[1].split("== Alerts")[0]
    assert re.search(r"^DETECTED \(UTC\) +SEVERITY +KIND", drift, re.M)  # a header, then a time on each row
    assert re.search(
        r"^\S+ \S+ +high +added +arn:aws:kms:eu-west-1:\d{12}:key/\S+ +arn:aws:iam::666677778888:root", drift, re.M
    )
    assert re.search(r"^\S+ \S+ +high +added +.* arn:aws:iam::777788889999:role/Backup", drift, re.M)
    assert "the local webhook received 2" in out
    # The commands it suggests work on what it left behind, without the emulator.
    config = tmp_path / "demo" / "kmsaudit.toml"
    events = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "drift", "--config", str(config), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert [e["kind"] for e in json.loads(events.stdout)] == ["added", "added"]
    history_arn = re.search(r"kmsaudit history (\S+)", out).group(1)  # type: ignore[union-attr]
    history = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "history", history_arn, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert history.returncode == 0 and "+" in history.stdout and "666677778888" in history.stdout
    # Issue #16: it ends with the HTML report of the last snapshot, self-contained.
    report = tmp_path / "demo" / "kmsaudit-report.html"
    assert f"written to {report}" in out and report.stat().st_size > 5_000
    assert 'id="total-findings">' in report.read_text() and "<script src" not in report.read_text()
    # Issue #15: one finding accepted as `kmsaudit accept --write` would, still shown, marked, not alerted.
    assert 'id = "partner-ingest"' in (tmp_path / "demo" / "accepted.toml").read_text()
    now = out.split("Key 'partner-shared' now")[1].split("== Alerts")[0]
    assert re.search(
        r"^medium +effective +external +arn:aws:iam::555566667777:role/Ingest .*\[accepted: partner-ingest\]$",
        now,
        re.M,
    )
    assert re.search(r"^high +effective +external +arn:aws:iam::777788889999:role/Backup .* -$", now, re.M)
    assert "(1 accepted)" in now
    accepted = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "findings", "--config", str(config), "--accepted", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert [(f["principal"], f["accepted_by"]) for f in json.loads(accepted.stdout)] == [
        ("arn:aws:iam::555566667777:role/Ingest", "partner-ingest")
    ]
