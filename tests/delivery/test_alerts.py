"""Alerts are never lost: a real aiohttp receiver, down during the scan, up later (issue #4)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from loopback import LocalReceiver, free_port
from structlog.testing import capture_logs

from kmsaudit.config.settings import AlertSinkSettings
from kmsaudit.delivery.alerts import build_sinks, deliver
from kmsaudit.store.database import Store

SECRET = "s3cr3t-hmac"


class Receiver(LocalReceiver):
    """Records what each path receives."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.received: list[tuple[str, dict[str, str], bytes]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, dict(request.headers), await request.read()))
        return web.Response(status=200)


PHASE_ONE = r"""
import asyncio, sys
sys.path[:0] = [sys.argv[2], sys.argv[2] + '/delivery']
from synthetic import scan
from test_alerts import SINKS
from kmsaudit.delivery.alerts import build_sinks, deliver, router
from kmsaudit.store.database import Store
store = Store(sys.argv[1])
sinks = build_sinks(SINKS)
store.save_scan(scan(20), route=router(sinks))                       # baseline: no alerts
store.save_scan(scan(20, extra_principal="arn:aws:iam::999988887777:root"), route=router(sinks))
print(asyncio.run(deliver(store, sinks)))                            # the receiver is down
"""

SINKS = [
    AlertSinkSettings(
        name="hook",
        type="webhook",
        url_env="KMSAUDIT_TEST_HOOK",
        min_severity="high",
        hmac_secret_env="KMSAUDIT_TEST_HMAC",
    ),
    AlertSinkSettings(name="chat", type="slack", url_env="KMSAUDIT_TEST_SLACK", min_severity="high"),
    AlertSinkSettings(name="am", type="alertmanager", url_env="KMSAUDIT_TEST_AM", min_severity="critical"),
]


@pytest.fixture
def sink_env(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("KMSAUDIT_TEST_HOOK", f"http://127.0.0.1:{port}/hook")
    monkeypatch.setenv("KMSAUDIT_TEST_SLACK", f"http://127.0.0.1:{port}/slack")
    monkeypatch.setenv("KMSAUDIT_TEST_AM", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("KMSAUDIT_TEST_HMAC", SECRET)
    return port


def test_alerts_survive_sink_downtime_and_a_restart(tmp_path: Path, sink_env: int) -> None:
    db = tmp_path / "k.db"
    tests = str(Path(__file__).resolve().parents[1])
    first = subprocess.run(
        [sys.executable, "-c", PHASE_ONE, str(db), tests],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ},
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == "(0, 40)"  # 20 "added" (high) × two high sinks, none sent
    assert "alert.failed" in first.stdout and "127.0.0.1" not in first.stdout + first.stderr  # URLs are secrets

    receiver = Receiver(sink_env)
    receiver.start()
    try:
        store = Store(db)  # a new process's view: only the database carries the outbox
        sinks = build_sinks(SINKS)
        delivered, pending = asyncio.run(deliver(store, sinks, now=float("inf")))
        assert (delivered, pending) == (40, 0)
        assert asyncio.run(deliver(store, sinks, now=float("inf"))) == (0, 0)  # nothing twice
    finally:
        receiver.stop()
    hooks = [(h, b) for path, h, b in receiver.received if path == "/hook"]
    ids = Counter(h["Idempotency-Key"] for h, _ in hooks)
    assert len(ids) == 20 and set(ids.values()) == {1}  # each id once
    for headers, body in hooks:
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Kmsaudit-Signature"] == f"sha256={expected}"
        event: dict[str, Any] = json.loads(body)
        assert event["kind"] == "added" and event["principal"] == "arn:aws:iam::999988887777:root"
    slack = [json.loads(b) for path, _, b in receiver.received if path == "/slack"]
    assert len(slack) == 20 and all(s["text"].startswith("kmsaudit high: added arn:aws:kms:") for s in slack)
    assert not [p for p, _, _ in receiver.received if p == "/api/v2/alerts"]  # below its "critical" threshold


def test_alertmanager_format_and_no_secret_in_failure_logs(tmp_path: Path, sink_env: int) -> None:
    from synthetic import scan

    store = Store(tmp_path / "k.db")
    am = build_sinks([SINKS[2].model_copy(update={"min_severity": "low"})])
    from kmsaudit.delivery.alerts import router

    store.save_scan(scan(2), route=router(am))
    store.save_scan(scan(2, extra_principal="arn:aws:iam::999988887777:root"), route=router(am))
    with capture_logs() as logs:
        assert asyncio.run(deliver(store, am, now=float("inf"))) == (0, 2)
    assert logs and all("127.0.0.1" not in json.dumps(entry, default=str) for entry in logs)
    receiver = Receiver(sink_env)
    receiver.start()
    try:
        assert asyncio.run(deliver(store, am, now=float("inf"))) == (2, 0)
    finally:
        receiver.stop()
    (path, _, body), _ = receiver.received
    alert = json.loads(body)[0]
    assert path == "/api/v2/alerts"
    assert alert["labels"]["alertname"] == "KmsAuditDrift" and alert["labels"]["severity"] == "high"
    assert not any(v.startswith("arn:") for v in alert["labels"].values())  # routing labels carry no ARN
    assert alert["annotations"]["principal"] == "arn:aws:iam::999988887777:root"


def test_alert_config_errors_are_exit_2_before_any_aws_call(tmp_path: Path) -> None:
    import os

    config = tmp_path / "k.toml"
    config.write_text(
        '[[accounts]]\nid = "111122223333"\n[[alerts]]\nname = "hook"\ntype = "webhook"\n'
        'url_env = "KMSAUDIT_NOT_SET_ANYWHERE"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "KMSAUDIT_NOT_SET_ANYWHERE"}
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens: any AWS call would fail differently

    def scan() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kmsaudit", "scan", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    proc = scan()
    assert proc.returncode == 2
    assert proc.stderr.strip() == "kmsaudit: error: alerts.hook: $KMSAUDIT_NOT_SET_ANYWHERE must hold an http(s) URL"
    config.write_text(config.read_text() + '[[alerts]]\nname = "hook"\ntype = "slack"\nurl_env = "X"\n')
    proc = scan()
    assert proc.returncode == 2 and "two [[alerts]] have the same name" in proc.stderr
