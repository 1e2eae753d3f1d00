"""A scan on every core (README "Performance"): `[scan] processes`.

IAM and the organization are read once, in the scan's own process; the account × region scopes
are shared out to worker processes, each with its own event loop, clients and pacers (a scope
lives in one process, so its quotas stay right), each evaluating its own scopes. A worker takes
the next scope whenever it has room, so a fast worker takes more and none sits idle while scopes
wait; the largest scopes (by the last snapshot) are taken first. Each scope's result comes back as
soon as it is read, with the workers' progress; the scan's process records the snapshot (one
writer for SQLite). A worker that dies fails the scopes it had taken and not yet reported, never
the scan, and never reads as access removed (their last good state carries over).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog

from kmsaudit.config.settings import Config, parse_duration
from kmsaudit.run.assemble import Outcome, lost

log = structlog.get_logger("kmsaudit.scan")
WATCH_EVERY = 1.0  # seconds between looks at a silent worker's deadlines
SCOPES_PER_WORKER = 8  # without an explicit `processes`: a worker for every this many scopes…
KEYS_PER_WORKER = 2_000  # …or for every this many keys of the last snapshot (a worker starts in 0.5 s)
PROGRESS_EVERY = 0.25  # seconds between a worker's progress messages

Scope = tuple[str, str]  # (account, region)


WORKER_BUDGET_MB = 256  # memory allowed a worker under a container's limit (one measured: ~90 MB)
CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def usable_cores(cgroup: Path = CGROUP) -> int:
    """The cores this process may use: its CPU affinity, within a container's CPU quota (cgroup v2
    `cpu.max`, v1 `cpu.cfs_quota_us`), and no more workers than a container's memory limit holds
    at WORKER_BUDGET_MB each beside the scan's own process. os.cpu_count() counts the host's cores:
    a pod limited to one CPU and 1 GiB on a 64-core node must not start 64 workers."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota, period = [*_read(cgroup / "cpu.max").split(), "", ""][:2]
    if not quota:  # cgroup v1
        quota, period = _read(cgroup / "cpu" / "cpu.cfs_quota_us"), _read(cgroup / "cpu" / "cpu.cfs_period_us")
    if quota.isdigit() and period.isdigit() and int(period) > 0:
        cores = min(cores, max(1, int(quota) // int(period)))
    limit = _read(cgroup / "memory.max") or _read(cgroup / "memory" / "memory.limit_in_bytes")
    if limit.isdigit() and int(limit) < 2**60:  # v1 says "no limit" with a huge number
        cores = min(cores, max(1, int(limit) // 2**20 // WORKER_BUDGET_MB - 1))
    return max(1, cores)


def worker_count(config: Config, scopes: int, keys: int = 0) -> int:
    """How many processes read `scopes` scopes: `processes` if set (at most one per scope); else
    one per core, as long as each gets enough to do — a handful of scopes, or a couple of thousand
    keys by the last snapshot (`keys`) — for its start (half a second of CPU) to be worth it."""
    if config.scan.processes is not None:
        return max(1, min(config.scan.processes, scopes))
    enough = max(scopes // SCOPES_PER_WORKER, keys // KEYS_PER_WORKER)
    return max(1, min(usable_cores(), scopes, enough))


def largest_first(scopes: Sequence[Scope], known: Mapping[str, str] | None) -> list[Scope]:
    """The scopes in the order workers take them: the largest by the last snapshot's keys first,
    so no large scope is left to the end while the other workers idle (a scope with no key in it,
    most regions of most accounts, goes last). Without a snapshot, as configured."""
    sizes: Counter[Scope] = Counter()
    for arn in known or ():
        parts = arn.split(":", 5)
        if len(parts) == 6:
            sizes[(parts[4], parts[3])] += 1
    return sorted(scopes, key=lambda s: -sizes[s])  # stable: ties stay as configured


class ScopeShare:
    """The scan's scopes shared by its worker processes: the next one to take, and who took each
    (one counter and one array in shared memory)."""

    def __init__(self, context: Any, scopes: Sequence[Scope]) -> None:
        self.scopes = list(scopes)
        self._next = context.Value("i", 0)
        self._owner = context.Array("i", [-1] * max(1, len(self.scopes)), lock=False)
        # When each was taken, on the monotonic clock (one clock for every process of the host):
        # the scan's process fails a scope read longer than `[scan] scope_deadline`.
        self._taken_at = context.Array("d", [0.0] * max(1, len(self.scopes)), lock=False)

    def claim(self, worker: int) -> Scope | None:
        with self._next.get_lock():
            i = int(self._next.value)
            if i >= len(self.scopes):
                return None
            self._next.value = i + 1
            self._taken_at[i] = time.monotonic()
            self._owner[i] = worker
        return self.scopes[i]

    def overdue(self, worker: int, reported: set[Scope], deadline: float, now: float) -> list[Scope]:
        """The scopes `worker` took more than `deadline` seconds ago and has not reported."""
        return [
            s
            for i, s in enumerate(self.scopes)
            if self._owner[i] == worker and s not in reported and now - self._taken_at[i] > deadline
        ]

    def taken_by(self, worker: int) -> list[Scope]:
        return [s for i, s in enumerate(self.scopes) if self._owner[i] == worker]

    def untaken(self) -> list[Scope]:
        with self._next.get_lock():
            return self.scopes[self._next.value :]


class _Ticks:
    """A worker's progress, sent to the scan's process in batches (a key at a time is too many)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.counts: Counter[str] = Counter()
        self.last = time.monotonic()

    def __call__(self, what: str, n: int = 1) -> None:
        self.counts[what] += n
        if time.monotonic() - self.last >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.counts:
            self.conn.send(("progress", dict(self.counts)))
            self.counts.clear()
        self.last = time.monotonic()


def _work(conn: Connection, payload: dict[str, Any], share: ScopeShare, index: int) -> None:
    """In a worker process: read, evaluate and send scopes until none is left to take."""
    from kmsaudit.logging import configure

    configure(**payload["logging"])
    structlog.contextvars.bind_contextvars(worker=index)  # its log lines say which worker wrote them
    try:
        asyncio.run(_scan_share(conn, payload, share, index))
    except (BrokenPipeError, EOFError):
        pass  # the scan's process stopped listening: the scan was abandoned
    except Exception as exc:  # reported, and its scopes failed by the scan's process
        log.error("scan.worker_error", worker=index, error=f"{type(exc).__name__}: {exc}"[:500])
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:500]))
    finally:
        conn.close()


async def _scan_share(conn: Connection, payload: dict[str, Any], share: ScopeShare, index: int) -> None:
    from kmsaudit.collect import Collector
    from kmsaudit.run.pipeline import scan_acceptance, scope_part

    config: Config = payload["config"]
    audit_scope = payload["audit_scope"]
    ticks = _Ticks(conn)
    collector = Collector(
        config,
        progress=ticks,
        only=dict.fromkeys(share.scopes),
        audit_scope=audit_scope,
        claim=lambda: share.claim(index),
        at_once=payload["at_once"],
        credentials=payload["credentials"],
    )
    acceptance = scan_acceptance(config, audit_scope.organization, payload["today"])
    async for scope in collector.scopes():
        part = await scope_part(scope, audit_scope, acceptance, payload["known"])
        ticks.flush()
        conn.send(("scope", part))
    conn.send(
        (
            "done",
            {
                "attempts": dict(collector.api.attempts),
                "matched": frozenset(acceptance.matched) if acceptance else frozenset(),
                "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            },
        )
    )


async def run_parallel(
    config: Config,
    scopes: Sequence[Scope],
    workers: int,
    audit_scope: Any,
    known: Mapping[str, str] | None,
    today: date | None,
    progress: Callable[[str, int], None] | None = None,
    credentials: Mapping[str, dict[str, str]] | None = None,
) -> list[Outcome]:
    """`scopes` (in the order to take them) read by `workers` processes; one Outcome each, and
    one more failing the scopes no worker lived to take. `credentials`: the role credentials this
    process assumed and verified, so that no worker assumes a role or checks an identity again."""
    from kmsaudit.logging import CURRENT

    context = multiprocessing.get_context("spawn")  # no fork of a running event loop or its sockets
    share = ScopeShare(context, scopes)
    # Room per worker: its part of `scopes_at_once` (memory: each scope holds its keys until
    # evaluated), and no more than an even share, so the first to start does not take them all.
    at_once = max(1, min(math.ceil(config.scan.scopes_at_once / workers), math.ceil(len(scopes) / workers)))
    payload = {
        "config": config,
        "audit_scope": audit_scope,
        "known": known,
        "today": today,
        "logging": dict(CURRENT),
        "at_once": at_once,
        "credentials": dict(credentials or {}),  # through the pipe to our own children only
    }
    loop = asyncio.get_running_loop()
    readers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kmsaudit-worker")

    async def one(index: int) -> Outcome:
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_work, args=(send, payload, share, index), daemon=True)
        started = time.monotonic()
        process.start()
        send.close()
        outcome = Outcome()
        reason = ""
        deadline = parse_duration(config.scan.scope_deadline)
        reported: set[Scope] = set()
        heard = time.monotonic()  # the last message from the worker
        try:
            while True:
                # Waits a little at a time: a worker that is stopped (SIGSTOP) or hung sends
                # nothing, and is killed once a scope it took is past its deadline (defect 6).
                if not await loop.run_in_executor(readers, receive.poll, min(WATCH_EVERY, deadline)):
                    now = time.monotonic()
                    late = share.overdue(index, reported, deadline, now)
                    if late:
                        process.kill()
                        reason = (
                            f"worker process read {late[0][0]}/{late[0][1]} for over {config.scan.scope_deadline} "
                            "([scan] scope_deadline): killed"
                        )
                        break
                    if now - heard > deadline:  # stopped holding no scope (before its first, after its last)
                        process.kill()
                        reason = f"worker process silent for over {config.scan.scope_deadline} ([scan] scope_deadline)"
                        break
                    continue
                heard = time.monotonic()
                kind, body = await loop.run_in_executor(readers, receive.recv)
                if kind == "progress":
                    for what, n in body.items():
                        if progress is not None:
                            progress(what, n)
                elif kind == "scope":
                    outcome.parts.append(body)
                    reported.add((body.status.account, body.status.region))
                elif kind == "done":
                    outcome.attempts.update(body["attempts"])
                    outcome.matched = body["matched"]
                    outcome.max_rss_mb = body["max_rss_mb"]
                    break
                else:  # "error"
                    reason = f"worker process failed: {body}"
                    break
        except (EOFError, OSError):
            await loop.run_in_executor(readers, process.join, 5)
            reason = f"worker process died (exit code {process.exitcode}) before reporting its scopes"
        except Exception as exc:  # a message that cannot be read: the worker is not to be trusted
            process.kill()
            reason = f"worker process sent what could not be read ({type(exc).__name__}: {exc})"[:300]
        except asyncio.CancelledError:  # the scan is abandoned (the daemon stops): so is its work
            process.kill()
            raise
        finally:
            receive.close()
            if process.is_alive():
                await loop.run_in_executor(readers, process.join, 5)
        if reason:
            reported = {(p.status.account, p.status.region) for p in outcome.parts}
            outcome.lost = lost([s for s in share.taken_by(index) if s not in reported], reason)
            log.error("scan.worker_failed", worker=index, scopes=len(outcome.lost), reason=reason)
        log.info(
            "scan.worker_done",
            worker=index,
            scopes=len(outcome.parts),
            seconds=round(time.monotonic() - started, 2),
            max_rss_mb=outcome.max_rss_mb,
        )
        return outcome

    try:
        outcomes = list(await asyncio.gather(*(one(i) for i in range(workers))))
    finally:
        readers.shutdown(wait=False)
    left = share.untaken()
    if left:  # every worker died before these were taken
        reason = "no worker process lived to read this scope"
        outcomes.append(Outcome(lost=lost(left, reason)))
    return outcomes
