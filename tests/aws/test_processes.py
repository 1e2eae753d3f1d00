"""Issue #18: a scan on several processes (`[scan] processes`, kmsaudit/workers.py) finds exactly
what one process finds on the moto estate, and a worker that dies fails its scopes only."""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from awsproxy import AwsProxy
from estate import A, B, C, Estate, config_text

from kmsaudit.config import load_config
from kmsaudit.model import ScanResult
from kmsaudit.scan import run_scan


def _scan(tmp_path: Path, processes: int) -> ScanResult:
    path = tmp_path / f"p{processes}.toml"
    path.write_text(config_text((A, B, C), extra=f"processes = {processes}"))
    import asyncio

    return asyncio.run(run_scan(load_config(path)))


def _view(result: ScanResult) -> tuple[set[tuple[object, ...]], set[tuple[str, str, bool]], set[str]]:
    findings = {(f.id, f.severity, f.actions, f.conditional, f.accepted) for f in result.findings}
    scopes = {(s.account, s.region, s.ok) for s in result.scopes}
    return findings, scopes, {lint.kind for lint in result.lints}


def test_two_processes_find_exactly_what_one_finds(tmp_path: Path, estate: Estate, aws: str) -> None:
    one, two = _scan(tmp_path, 1), _scan(tmp_path, 2)
    assert _view(one) == _view(two)
    assert one.keys == two.keys and not two.failed_scopes
    # IAM is read once, by the parent, not once per worker
    iam = sum(n for (service, op, _), n in two.attempts if op == "GetAccountAuthorizationDetails")
    assert iam == sum(n for (service, op, _), n in one.attempts if op == "GetAccountAuthorizationDetails")


@pytest.fixture
def slow(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsProxy]:
    proxy = AwsProxy(aws, latency=0.3)  # long enough a scan to kill a worker in
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    yield proxy
    proxy.stop()


def test_a_worker_that_dies_fails_its_scopes_not_the_scan(tmp_path: Path, estate: Estate, slow: AwsProxy) -> None:
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            workers = multiprocessing.active_children()
            if len(workers) == 2 and all(w.pid for w in workers):
                time.sleep(1.0)  # both are reading
                victim = workers[0]
                assert victim.pid is not None
                killed.append(victim.pid)
                import os

                os.kill(victim.pid, signal.SIGKILL)
            time.sleep(0.05)

    threading.Thread(target=kill_one, daemon=True).start()
    result = _scan(tmp_path, 2)
    assert killed, "no worker was seen"
    failed = [s for s in result.scopes if not s.ok]
    assert len(failed) == 3 and all(s.error_code == "worker" for s in failed)  # its share: 6 scopes over 2
    ok = {(s.account, s.region) for s in result.scopes if s.ok}
    assert len(ok) == 3  # the other worker's scopes were read
    assert all((f.key_account, f.region) in ok for f in result.findings)
