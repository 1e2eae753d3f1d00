"""SIGKILL at the worst moments (issue #7, point 2): during collection, during the snapshot write,
during alert delivery. After a restart the database passes `integrity_check`, the last complete
snapshot is intact, and no alert is lost or acknowledged twice under the same id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from awsproxy import AwsProxy
from estate import Estate, config_text
from loopback import LocalReceiver, wait_for
from synthetic import scan

from kmsaudit.config.settings import AlertSinkSettings
from kmsaudit.delivery.alerts import build_sinks, router
from kmsaudit.store.database import Store

TESTS = str(Path(__file__).resolve().parents[1])


def _integrity(path: Path) -> str:
    store = Store(path)  # what the restarted process sees
    try:
        return store.integrity()
    finally:
        store.close()


def _kmsaudit(*args: str, endpoint: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kmsaudit", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": endpoint},
    )


@pytest.mark.parametrize("operation", ["ListKeys", "GetKeyPolicy", "GetAccountAuthorizationDetails"])
def test_sigkill_during_collection_keeps_the_last_complete_snapshot(
    operation: str, tmp_path: Path, estate: Estate, aws: str, report: Any
) -> None:
    config = tmp_path / "k.toml"
    db = tmp_path / "k.db"
    config.write_text(config_text(store=str(db)))
    first = _kmsaudit("scan", "--config", str(config), endpoint=aws)
    assert first.wait(120) == 0, first.communicate()[1]
    store = Store(db)
    before = sorted(f["id"] for f in store.findings())
    store.close()

    proxy = AwsProxy(aws, latency=0.2)  # slow enough to be caught mid-collection
    endpoint = proxy.start()
    try:
        victim = _kmsaudit("scan", "--config", str(config), endpoint=endpoint)
        wait_for(lambda: any(op == operation for _, op in proxy.operations))
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        proxy.stop()

    assert _integrity(db) == "ok"
    store = Store(db)
    assert store.latest_snapshot() == 1 and sorted(f["id"] for f in store.findings()) == before
    store.close()
    again = _kmsaudit("scan", "--config", str(config), endpoint=aws)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    store = Store(db)
    assert store.latest_snapshot() == 2 and store.drift() == []  # the kill left nothing to mistake for drift
    report.add(crash_points=1, crash_points_survived=1)


WRITER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from synthetic import scan
from kmsaudit.store.database import Store
store = Store(sys.argv[1])
store.save_scan(scan(10))
print("ready", flush=True)
i = 0
while True:
    i += 1
    store.save_scan(scan(3000, extra_principal=f"arn:aws:iam::{i:012d}:root"))
"""


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.9, 1.7])
def test_sigkill_during_the_snapshot_write_leaves_whole_snapshots_only(
    delay: float, tmp_path: Path, report: Any
) -> None:
    path = tmp_path / "k.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), TESTS], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _integrity(path) == "ok"
    store = Store(path)
    # Every snapshot present is whole: a scope row and its state for each.
    for (snapshot_id,) in store.db.execute("SELECT id FROM snapshots").fetchall():
        rows = store.db.execute("SELECT state FROM scopes WHERE snapshot_id = ?", [snapshot_id]).fetchall()
        assert len(rows) == 1 and rows[0][0] is not None
    assert len(store.findings(1)) == 10  # the first snapshot is readable
    report.add(crash_points=1, crash_points_survived=1)


class HoldingReceiver(LocalReceiver):
    """Acknowledges the first `ack_first` deliveries, then holds every request unanswered."""

    def __init__(self, ack_first: int) -> None:
        super().__init__()
        self.ack_first = ack_first
        self.acked: list[str] = []  # Idempotency-Key of each delivery answered 2xx
        self.held: list[str] = []
        self.holding = True

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        key = request.headers["Idempotency-Key"]
        if self.holding and len(self.acked) >= self.ack_first:
            self.held.append(key)
            await asyncio.sleep(3600)  # until the sender is killed
        self.acked.append(key)
        return web.Response(status=200)


SENDER = r"""
import asyncio, sys
from kmsaudit.delivery.alerts import build_sinks, deliver
from kmsaudit.config.settings import AlertSinkSettings
from kmsaudit.store.database import Store
sinks = build_sinks([AlertSinkSettings(name="hook", type="webhook", url_env="KMSAUDIT_TEST_HOOK", min_severity="high")])
print(asyncio.run(deliver(Store(sys.argv[1]), sinks, now=float("inf"))), flush=True)
"""


@pytest.mark.parametrize("ack_first", [0, 3])
def test_sigkill_during_alert_delivery_loses_nothing_and_acknowledges_nothing_twice(
    ack_first: int, tmp_path: Path, report: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "k.db"
    receiver = HoldingReceiver(ack_first)
    monkeypatch.setenv("KMSAUDIT_TEST_HOOK", f"http://127.0.0.1:{receiver.start()}/hook")
    env = dict(os.environ)
    try:
        sinks = build_sinks(
            [AlertSinkSettings(name="hook", type="webhook", url_env="KMSAUDIT_TEST_HOOK", min_severity="high")]
        )
        store = Store(db)
        store.save_scan(scan(8), route=router(sinks))
        _, events = store.save_scan(scan(8, extra_principal="arn:aws:iam::999988887777:root"), route=router(sinks))
        expected = {e.id for e in events}
        assert len(expected) == 8 and store.pending_alerts() == 8
        store.close()

        sender = subprocess.Popen([sys.executable, "-c", SENDER, str(db)], env=env, stdout=subprocess.PIPE, text=True)
        wait_for(lambda: bool(receiver.held))
        sender.send_signal(signal.SIGKILL)  # one delivery in flight, unanswered
        sender.wait(30)
        assert len(receiver.acked) == ack_first
        interrupted = receiver.held[0]

        assert _integrity(db) == "ok"
        receiver.holding = False
        again = subprocess.run([sys.executable, "-c", SENDER, str(db)], env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == f"({8 - ack_first}, 0)"  # the rest delivered, nothing pending
    finally:
        receiver.stop()
    acked = Counter(receiver.acked)
    assert set(acked) == expected  # none lost
    assert set(acked.values()) == {1}  # none acknowledged twice under the same id
    assert interrupted in acked  # the interrupted one went again, under its own id
    report.add(
        crash_points=1, crash_points_survived=1, alerts_checked=len(expected), alerts_lost=len(expected - set(acked))
    )
