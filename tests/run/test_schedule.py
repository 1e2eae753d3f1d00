"""Issue #24, defect 8 ("Time"): the scheduler ran on wall-clock time — a clock stepped back an
hour moved the next scan 75 minutes away. Schedules run on the monotonic clock; the wall clock
only stamps records (and reads a cron expression's next match once, at the end of a scan)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kmsaudit.config.settings import load_config
from kmsaudit.run.daemon import Daemon


def daemon(tmp_path: Path, interval: str) -> Daemon:
    path = tmp_path / "k.toml"
    path.write_text(
        f'[scan]\ninterval = "{interval}"\nregions = ["us-east-1"]\n'
        f'[store]\npath = "{tmp_path / "k.db"}"\n[[accounts]]\nid = "111122223333"\n'
        'role_arn = "arn:aws:iam::111122223333:role/kmsaudit"\n'
    )
    return Daemon(path, load_config(path))


@pytest.mark.parametrize("interval", ["15m", "*/15 * * * *"])
def test_a_wall_clock_stepped_back_an_hour_does_not_move_the_next_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: str
) -> None:
    d = daemon(tmp_path, interval)
    d.last_scan_end, d.last_scan_end_monotonic = time.time(), time.monotonic()
    due = d._next_scan(1.0)
    assert 0 < due - time.monotonic() <= 15 * 60
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # NTP steps the clock back an hour
    assert d._next_scan(1.0) == due
    monkeypatch.setattr(time, "time", lambda: real() + 7200)  # or forward two
    assert d._next_scan(1.0) == due


async def test_a_scan_that_fails_every_time_makes_the_daemon_unready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue #24: /readyz counted a scan that raised (disk full, the store busy) as a
    scan, so a daemon failing every cycle stayed ready forever."""
    from kmsaudit.errors import StoreError
    from kmsaudit.run import daemon as module

    async def fails(*args: object, **kwargs: object) -> None:
        raise StoreError("k.db: database or disk is full")

    monkeypatch.setattr(module, "scan_and_record", fails)
    d = daemon(tmp_path, "15m")
    d.has_state = True  # an earlier snapshot is served
    with pytest.raises(StoreError):
        await d.scan_once()
    assert d.last_scan_end_monotonic is not None  # the schedule goes on from its end
    response = await d._readyz(None)  # type: ignore[arg-type]
    assert response.status == 503 and "no scan stored" in response.text


async def test_a_scan_whose_organization_read_failed_keeps_the_principals_re_reads_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue #24: a scan whose organization read failed handed the daemon an audit scope
    with no organization, and event re-reads then evaluated members as outsiders until the next
    good scan. The last good one is kept."""
    from kmsaudit.model import ORGANIZATION, ScanResult, ScopeStatus
    from kmsaudit.run import daemon as module
    from kmsaudit.run.scan import Recorded

    good, degraded = object(), object()
    org = [ScopeStatus(ORGANIZATION, "global", True), ScopeStatus(ORGANIZATION, "global", False, 0, "denied", "x")]
    answers = iter([(good, org[0]), (degraded, org[1]), (degraded, org[0])])

    async def record(*args: object, **kwargs: object) -> Recorded:
        scope, status = next(answers)
        return Recorded(ScanResult((), (), (status,)), 1, [], 0, audit_scope=scope)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "scan_and_record", record)
    d = daemon(tmp_path, "15m")
    await d.scan_once()
    assert d.audit_scope is good
    await d.scan_once()  # the organization could not be read
    assert d.audit_scope is good
    await d.scan_once()  # read again
    assert d.audit_scope is degraded
