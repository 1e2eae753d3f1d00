"""`kmsaudit demo` runs to the end non-interactively and shows the whole product (issue #6)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import get_until


def _serve_until_scraped(proc: subprocess.Popen[str], workdir: Path) -> str:
    """Read the demo's output up to the daemon's start, scrape /metrics (on the port it printed)
    once the daemon has scanned, then stop it with SIGTERM; returns what the demo printed."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Serving /metrics"):
            break
    else:
        raise AssertionError("the demo never started serving:\n" + "".join(lines[-20:]))
    port = int(re.search(r" on 127\.0\.0\.1:(\d+) ", lines[-1]).group(1))  # type: ignore[union-attr]
    assert port != 0 and f'listen = "127.0.0.1:{port}"' in (workdir / "kmsaudit.toml").read_text()
    _, metrics = get_until(f"http://127.0.0.1:{port}/metrics", lambda status, body: "kmsaudit_findings{" in body)
    assert "kmsaudit_findings{" in metrics, "the daemon never exported its findings"
    assert re.search(r'^kmsaudit_keys\{account="\d{12}",region="eu-west-1"\} \d', metrics, re.M)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0  # SIGTERM is a clean stop
    return "".join(lines) + rest


def test_demo_shows_findings_drift_and_the_delivered_alert_then_serves(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(  # --port 0: any free port, printed (9465 may be another test's or daemon's)
        [sys.executable, "-m", "kmsaudit", "demo", "--dir", str(tmp_path / "demo"), "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        out = _serve_until_scraped(proc, tmp_path / "demo")
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
    # Issue #25: each key's aliases beside its ARN, so the story's key names are on screen.
    assert re.search(r"^arn:aws:kms:us-east-1:\d{12}:key/\S+  \(alias/partner-shared\)$", scan1, re.M)
    assert re.search(r"^arn:aws:kms:eu-west-1:\d{12}:key/\S+  \(alias/secrets-public\)$", scan1, re.M)
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
    alerts = out.split("== Alerts")[1].split("The snapshots are in")[0]
    assert re.search(r"role/Backup on arn:aws:kms:us-east-1:\d{12}:key/\S+  \(alias/partner-shared\)$", alerts, re.M)
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
    assert re.search(r"^arn:aws:kms:\S+  \(alias/partner-shared\)$", now, re.M)
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


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "kmsaudit", "demo", "--dir", str(tmp_path / "demo"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_demo_serve_on_a_busy_port_fails_before_the_demo(tmp_path: Path) -> None:
    """Issue #25: `demo --serve` whose port is taken says so at once, in one line naming the port
    and how to choose another (exit 2), instead of running the whole demo first."""
    with socket.create_server(("127.0.0.1", 0)) as held:  # a real listener holds the port
        port = held.getsockname()[1]
        proc = _demo(tmp_path, "--serve", "--port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # nothing of the demo ran: no emulator, no seeding
    assert not (tmp_path / "demo").exists()
    (line,) = proc.stderr.splitlines()
    assert line.startswith("kmsaudit: error: --serve: cannot listen on ")
    assert f"127.0.0.1:{port} " in line and "--port PORT" in line and "--port 0" in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "9466"], "--port is the port of --serve"),
        (["--serve", "--port", "65536"], "'65536' is not a port number"),
        (["--serve", "--port", "http"], "'http' is not a port number"),
    ],
)
def test_demo_port_mistakes_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    proc = _demo(tmp_path, *args)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert says in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "demo").exists()
