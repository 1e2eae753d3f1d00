"""Issue #18: a scan on several processes (`[scan] processes`, kmsaudit/run/workers.py) finds exactly
what one process finds on the moto estate, and a worker that dies fails its scopes only."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from awsproxy import AwsProxy
from estate import A, B, C, Estate, config_text

from kmsaudit.config.settings import load_config
from kmsaudit.model import ScanResult
from kmsaudit.run.scan import run_scan
from kmsaudit.run.workers import largest_first


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
    # IAM is read once, by the parent, not once per worker; and each role is assumed and each
    # identity checked once: the workers read with the credentials the parent verified
    for operation in ("GetAccountAuthorizationDetails", "AssumeRole", "GetCallerIdentity"):
        calls = sum(n for (_, op, _), n in two.attempts if op == operation)
        assert calls == sum(n for (_, op, _), n in one.attempts if op == operation) == 3, operation


@pytest.fixture
def slow(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsProxy]:
    proxy = AwsProxy(aws, latency=0.3)  # long enough a scan to kill a worker in
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    yield proxy
    proxy.stop()


def test_a_worker_that_dies_fails_its_scopes_not_the_scan(tmp_path: Path, estate: Estate, slow: AwsProxy) -> None:
    """SIGKILL a worker while it holds scopes: those it had not reported fail (code `worker`),
    what it reported before stays, the other worker's scopes are read, and the scan ends."""
    one = _scan(tmp_path, 1)
    keyed = {(s.account, s.region) for s in one.scopes if s.keys}  # the scopes with keys
    estate_keys = one.keys
    assert len(keyed) >= 2
    slow.stall["GetKeyPolicy"] = 60.0  # every scope with keys waits on its policies
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(slow.stalled) < estate_keys:
            time.sleep(0.02)
        time.sleep(0.5)  # a worker left with nothing to read has exited by now
        victims = multiprocessing.active_children()
        if victims and victims[0].pid is not None:
            killed.append(victims[0].pid)
            os.kill(victims[0].pid, signal.SIGKILL)
        time.sleep(0.5)
        slow.stall.clear()  # the other worker's policies are answered

    threading.Thread(target=kill_one, daemon=True).start()
    result = _scan(tmp_path, 2)
    assert killed, "no worker was seen"
    failed = {(s.account, s.region): s for s in result.scopes if not s.ok}
    # a live worker holds only scopes with keys (the others were read at once); the failed ones
    # are exactly those the killed worker held
    assert failed and set(failed) <= keyed
    assert all(s.error_code == "worker" and "died" in s.error for s in failed.values())
    ok = {(s.account, s.region) for s in result.scopes if s.ok}
    assert len(ok) + len(failed) == 6 and keyed - set(failed) <= ok
    assert all((f.key_account, f.region) in ok for f in result.findings)
    assert {(f.key_account, f.region) for f in result.findings} == {
        (f.key_account, f.region) for f in one.findings if (f.key_account, f.region) not in failed
    }


def test_a_stopped_worker_is_killed_at_its_scope_deadline_and_the_scan_ends(
    tmp_path: Path, estate: Estate, slow: AwsProxy
) -> None:
    """Issue #24, defect 6: a worker stopped (SIGSTOP) or hung hung `kmsaudit scan` forever,
    holding the writer lock. Past `[scan] scope_deadline` it is killed, the scopes it held fail
    (naming the deadline), the other worker's are read, and the scan ends."""
    one = _scan(tmp_path, 1)
    keyed = {(s.account, s.region) for s in one.scopes if s.keys}
    slow.stall["GetKeyPolicy"] = 60.0
    stopped: list[int] = []

    def stop_one() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(slow.stalled) < one.keys:
            time.sleep(0.02)
        time.sleep(0.3)
        victims = multiprocessing.active_children()
        if victims and victims[0].pid is not None:
            stopped.append(victims[0].pid)
            os.kill(victims[0].pid, signal.SIGSTOP)  # alive, silent: no EOF ever comes
        slow.stall.clear()

    path = tmp_path / "deadline.toml"
    path.write_text(config_text((A, B, C), extra='processes = 2\nscope_deadline = "8s"'))
    threading.Thread(target=stop_one, daemon=True).start()
    import asyncio

    started = time.monotonic()
    result = asyncio.run(run_scan(load_config(path)))
    assert stopped, "no worker was seen"
    assert time.monotonic() - started < 45  # ended: the deadline, not forever
    with pytest.raises(ProcessLookupError):
        os.kill(stopped[0], 0)  # killed and reaped, not left stopped
    failed = {(s.account, s.region): s for s in result.scopes if not s.ok}
    assert failed and set(failed) <= keyed
    assert all(s.error_code == "worker" and "scope_deadline" in s.error for s in failed.values()), failed
    assert len(result.scopes) == 6 and keyed - set(failed) <= {(s.account, s.region) for s in result.scopes if s.ok}


def test_workers_report_progress_as_they_go(tmp_path: Path, estate: Estate, aws: str) -> None:
    """The progress line of a terminal (`kmsaudit scan`) advances with worker processes too: every
    scope and every key the workers read is counted in the scan's process, and the total is known."""
    path = tmp_path / "p2.toml"
    path.write_text(config_text((A, B, C), extra="processes = 2"))
    counts: dict[str, int] = {}

    def progress(what: str, n: int) -> None:
        counts[what] = counts.get(what, 0) + n

    import asyncio

    result = asyncio.run(run_scan(load_config(path), progress=progress))
    assert not result.failed_scopes
    assert counts["planned"] == len(result.scopes) == 6
    assert counts["scopes"] == 6
    assert counts["keys"] == result.keys > 0


def test_the_largest_scopes_are_taken_first() -> None:
    """Workers take scopes by the last snapshot's key count, largest first (a scope with no key,
    as most regions are, last), so a large scope is not left to the end while other workers idle."""
    known = {f"arn:aws:kms:us-east-1:{A}:key/{i}": "h" for i in range(5)}
    known |= {f"arn:aws:kms:eu-west-1:{B}:key/{i}": "h" for i in range(50)}
    known |= {f"arn:aws:kms:us-east-1:{C}:key/{i}": "h" for i in range(1)}
    scopes = [(A, "us-east-1"), (C, "us-east-1"), (B, "eu-west-1"), (C, "eu-west-1")]
    assert largest_first(scopes, known) == [(B, "eu-west-1"), (A, "us-east-1"), (C, "us-east-1"), (C, "eu-west-1")]
    assert largest_first(scopes, None) == scopes  # a first scan: as configured


def test_an_abandoned_scan_leaves_no_worker_behind(tmp_path: Path, estate: Estate, slow: AwsProxy) -> None:
    """The daemon cancels a scan when it stops: the worker processes go with it, none is left
    reading AWS for nobody."""
    import asyncio

    path = tmp_path / "p2.toml"
    path.write_text(config_text((A, B, C), extra="processes = 2"))

    async def abandon() -> list[multiprocessing.Process]:
        scan = asyncio.create_task(run_scan(load_config(path)))
        for _ in range(600):
            await asyncio.sleep(0.05)
            if len(multiprocessing.active_children()) == 2:
                break
        seen = multiprocessing.active_children()
        scan.cancel()
        with pytest.raises(asyncio.CancelledError):
            await scan
        return seen

    seen = asyncio.run(abandon())
    assert len(seen) == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(p.is_alive() for p in seen):
        time.sleep(0.05)
    assert not any(p.is_alive() for p in seen)


def test_by_default_a_scan_uses_every_core_once_there_is_enough_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README "Performance": without `processes`, one process per core once each has enough to
    do — 8 scopes, or 2,000 keys of the last snapshot — and never more than one per scope; a
    small estate stays on one process (a worker costs half a second to start)."""
    from kmsaudit.run import workers
    from kmsaudit.run.workers import worker_count

    monkeypatch.setattr(workers, "usable_cores", lambda: 4)
    path = tmp_path / "k.toml"
    path.write_text(config_text((A, B, C)))
    config = load_config(path)
    assert worker_count(config, 6) == 1  # 3 accounts × 2 regions, nothing known yet
    assert worker_count(config, 6, keys=300) == 1  # a small estate
    assert worker_count(config, 6, keys=5_000) == 2  # 2,000 keys a worker
    assert worker_count(config, 6, keys=100_000) == 4  # every core
    assert worker_count(config, 3, keys=100_000) == 3  # never more than one per scope
    assert worker_count(config, 40) == 4  # many scopes, even before the first snapshot
    path.write_text(config_text((A, B, C), extra="processes = 3"))
    assert worker_count(load_config(path), 6) == 3  # as set


def test_a_worker_holds_at_most_its_room_of_scopes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker claims a scope only when it has room: at most `at_once` scopes are held — being
    read, waiting, or being evaluated by the caller (each holds its keys: issue #19's memory
    bound) — and what it has no room for is left for the other workers to claim."""
    import asyncio

    from kmsaudit.collect import Collector
    from kmsaudit.collect.collector import Target
    from kmsaudit.model import ScopeResult

    path = tmp_path / "k.toml"
    path.write_text(config_text((A, B, C)))
    config = load_config(path)
    scopes = [(a, r) for a in (A, B, C) for r in ("us-east-1", "eu-west-1")]
    left = list(scopes)
    held: list[int] = [0]
    most: list[int] = [0]

    def claim() -> tuple[str, str] | None:
        if not left:
            return None
        held[0] += 1
        most[0] = max(most[0], held[0])
        return left.pop(0)

    async def read(self: Collector, sessions: object, target: Target, region: str) -> ScopeResult:
        await asyncio.sleep(0.01)
        return ScopeResult(target.account, region, True)

    monkeypatch.setattr(Collector, "_read_scope", read)

    async def consume() -> list[tuple[str, str]]:
        collector = Collector(config, only=dict.fromkeys(scopes), claim=claim, at_once=2)
        collector.targets = collector._only_targets()
        seen = []
        async for result in collector._claimed(None):  # type: ignore[arg-type]
            seen.append((result.account, result.region))
            await asyncio.sleep(0.05)  # a slow evaluation: the readers must not run ahead
            held[0] -= 1
        return seen

    seen = asyncio.run(consume())
    assert sorted(seen) == sorted(scopes)
    assert most[0] == 2


def test_a_containers_cpu_quota_and_memory_limit_bound_the_default(tmp_path: Path) -> None:
    """os.cpu_count() counts the host's cores: a pod limited to 1.5 CPUs, or to 1 GiB (256 MB a
    worker beside the scan's own process), must not start a worker per host core."""
    from kmsaudit.run.workers import usable_cores

    affinity = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    v2.mkdir()
    assert usable_cores(v2) == affinity  # no cgroup files: the CPUs this process may run on
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "memory.max").write_text("max\n")
    assert usable_cores(v2) == affinity  # no limits
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert usable_cores(v2) == 1  # 1.5 CPUs: one worker
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "memory.max").write_text(f"{512 * 2**20}\n")
    assert usable_cores(v2) == 1  # 512 MB: the scan's process and one worker
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "memory").mkdir()
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert usable_cores(v1) == affinity  # v1 without limits
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert usable_cores(v1) == 1
