"""Issue #19: what on-call would be paged for next. Each test reproduced the defect it names on
main (commit a2fe9df) before its fix: real SQLite files, real local HTTP servers (one that never
answers, one that redirects)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from loopback import Blackhole, LocalReceiver, RecordingReceiver
from synthetic import scan

from kmsaudit.collect.errors import convert
from kmsaudit.config.settings import AlertSinkSettings
from kmsaudit.delivery.alerts import build_sinks, deliver, router
from kmsaudit.store.database import Store


class Redirecting(LocalReceiver):
    """An SSO proxy in front of a webhook: 302 to a login page, which answers 200."""

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        if request.path == "/login":
            return web.Response(status=200, text="<html>sign in</html>")
        raise web.HTTPFound("/login")

    def start(self) -> int:
        async def go() -> int:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return int(self.runner.addresses[0][1])

        self.port = asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)
        return self.port


def sinks(monkeypatch: pytest.MonkeyPatch, **urls: str) -> list:
    settings = []
    for name, url in urls.items():
        monkeypatch.setenv(f"KMSAUDIT_T_{name.upper()}", url)
        settings.append(AlertSinkSettings(name=name, type="webhook", url_env=f"KMSAUDIT_T_{name.upper()}"))
    return build_sinks(settings)


def test_12_a_timeout_is_labelled_timeout_not_network() -> None:
    """On Python 3.11 TimeoutError is an OSError: timeouts were labelled `network`."""
    assert convert(TimeoutError(), "ListKeys").code == "timeout"
    assert convert(ReadTimeoutError(endpoint_url="https://kms.us-east-1.amazonaws.com"), "ListKeys").code == "timeout"
    assert (
        convert(ConnectTimeoutError(endpoint_url="https://kms.us-east-1.amazonaws.com"), "ListKeys").code == "timeout"
    )
    assert convert(ConnectionRefusedError(), "ListKeys").code == "network"


def test_5_a_redirect_is_a_failed_delivery_not_a_delivered_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp followed a 302 by turning the POST into a bodiless GET; the login page's 200
    marked the alert delivered. Redirects are refused and reported."""
    receiver = Redirecting()
    port = receiver.start()
    try:
        hooks = sinks(monkeypatch, hook=f"http://127.0.0.1:{port}/hook")
        store = Store(tmp_path / "k.db")
        store.save_scan(scan(2))
        store.save_scan(scan(2, extra_principal="arn:aws:iam::999988887777:root"), route=router(hooks))
        delivered, pending = asyncio.run(deliver(store, hooks))
    finally:
        receiver.stop()
    assert (delivered, pending) == (0, 2)
    errors = [row[0] for row in store.db.execute("SELECT last_error FROM outbox").fetchall() if row[0]]
    assert errors and all("redirected (HTTP 302)" in error for error in errors)
    assert store.db.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL").fetchone()[0] == 0


def test_2_a_blackholed_sink_does_not_starve_a_healthy_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows went one by one, 10 s timeout each, within one 30 s budget: with one sink blackholed
    the other got ~3 alerts a scan. Each sink now has its own delivery and budget."""
    healthy, hole = RecordingReceiver(), Blackhole()
    port = healthy.start()
    try:
        both = sinks(monkeypatch, dead=f"http://127.0.0.1:{hole.port}/x", pager=f"http://127.0.0.1:{port}/x")
        store = Store(tmp_path / "k.db")
        store.save_scan(scan(20))
        _, events = store.save_scan(scan(20, extra_principal="arn:aws:iam::999988887777:root"), route=router(both))
        started = time.monotonic()
        delivered, pending = asyncio.run(deliver(store, both, deadline_seconds=3.0))
        elapsed = time.monotonic() - started
    finally:
        healthy.stop()
        hole.close()
    assert len(events) == 20
    assert sorted(healthy.keys) == sorted(e.id for e in events)  # every one, within one delivery
    assert delivered == 20 and pending == 20  # the blackholed sink's wait for a later try
    assert elapsed < 30  # bounded by the budget, not by 20 timeouts in a row


def test_1_retention_failing_is_a_store_error_and_the_database_stays_bounded(tmp_path: Path) -> None:
    """A failed VACUUM (disk full, a lock) was an sqlite3 error, not a StoreError: the daemon died
    with a traceback, and delivery and metrics never ran. Pruning now runs in small transactions,
    gives space back incrementally, and fails as a StoreError; the next prune finishes the job."""
    import os
    import sqlite3

    from kmsaudit.errors import StoreError

    path = tmp_path / "k.db"
    store = Store(path)
    day, now = 86400.0, 1_800_000_000.0
    for i in range(60):  # two months of daily scans, each with a new principal
        result = scan(40, finished_at=now - (60 - i) * day, extra_principal=f"arn:aws:iam::{100000000000 + i}:root")
        store.save_scan(result, detected_at=result.finished_at)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = os.path.getsize(path)

    # Another writer takes the lock just as the space is being given back (VACUUM on 0.1.0,
    # incremental_vacuum now), and keeps it longer than the store waits.
    blocker = sqlite3.connect(path, timeout=0.1, isolation_level=None)

    def lock_when_reclaiming(statement: str) -> None:
        if "vacuum" in statement.lower() and not blocker.in_transaction:
            blocker.execute("BEGIN IMMEDIATE")

    store.db.execute("PRAGMA busy_timeout=200")
    store.db.conn.set_trace_callback(lock_when_reclaiming)
    try:
        with pytest.raises(StoreError, match="locked"):
            store.prune(7, now=now)
    finally:
        store.db.conn.set_trace_callback(None)
        blocker.rollback()
        blocker.close()
    store.prune(7, now=now)  # the next one finishes what the interrupted one started
    assert store.db.execute("SELECT count(*) FROM snapshots").fetchone()[0] <= 8
    assert store.integrity() == "ok"
    wal = f"{path}-wal"
    total = os.path.getsize(path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)
    assert total < before  # space given back and the WAL truncated: never twice the data on disk
    store.close()


async def test_9_a_throttled_scope_cannot_take_every_request_slot() -> None:
    """The `concurrency` slot was held through botocore's backoff sleeps: one throttled scope
    could hold all of them and stall every other scope. A scope now holds at most its share."""
    from kmsaudit.collect.api import Api
    from kmsaudit.config.settings import ScanSettings

    api = Api(ScanSettings(concurrency=8))
    done = {"throttled": 0}

    class Throttled:  # every call spends a while in botocore's retries
        async def describe_key(self, **_: object) -> dict[str, object]:
            await asyncio.sleep(0.2)
            done["throttled"] += 1
            return {}

    class Healthy:
        async def describe_key(self, **_: object) -> dict[str, object]:
            return {"done_before_me": done["throttled"]}

    slow = [asyncio.create_task(api.call(Throttled(), "111111111111", "us-east-1", "DescribeKey")) for _ in range(16)]
    await asyncio.sleep(0.01)  # they have taken what they can
    answer = await api.call(Healthy(), "222222222222", "eu-west-1", "DescribeKey")
    assert answer == {"done_before_me": 0}  # served at once, not after the throttled scope's calls
    await asyncio.gather(*slow)


def test_11_gauges_of_scopes_no_longer_configured_disappear(tmp_path: Path) -> None:
    """Gauges of accounts or regions removed from the config were exported until a restart, so
    KmsAuditScanStale fired for them forever."""
    from prometheus_client import generate_latest

    from kmsaudit.metrics import Metrics
    from kmsaudit.model import ScanResult, ScopeStatus

    store = Store(tmp_path / "k.db")
    both = scan(2)
    gone = ScopeStatus("999999999999", "eu-west-1", True, 2, key_policies=both.scopes[0].key_policies)
    store.save_scan(ScanResult(both.findings, (), (*both.scopes, gone), started_at=1.0, finished_at=2.0))
    metrics = Metrics()
    metrics.update(store)
    assert b'account="999999999999"' in generate_latest(metrics.registry)
    store.save_scan(scan(2))  # the account was removed from the config
    metrics.update(store)
    assert b'account="999999999999"' not in generate_latest(metrics.registry)
