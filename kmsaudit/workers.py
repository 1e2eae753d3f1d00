"""A scan on every core (README "Performance"): `[scan] processes`.

IAM and the organization are read once, here; the account × region scopes are dealt out to
worker processes, each with its own event loop, clients and pacers (a scope lives in one process,
so its quotas stay right), each evaluating its own scopes; their results come back to this
process, which records the snapshot (one writer for SQLite). A worker that dies fails its scopes,
never the scan, and never reads as access removed (their last good state carries over).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date
from multiprocessing.connection import Connection
from typing import Any

import structlog

from kmsaudit.config import Config
from kmsaudit.model import ScanResult, ScopeStatus

log = structlog.get_logger("kmsaudit.scan")
SCOPES_PER_WORKER = 8  # without an explicit `processes`: fewer scopes than this a process stay in one


def worker_count(config: Config, scopes: int) -> int:
    """How many processes read `scopes` scopes: `processes` if set (at most one per scope); else
    one per core, as long as each gets a handful of scopes (a process costs a second to start)."""
    if config.scan.processes is not None:
        return max(1, min(config.scan.processes, scopes))
    return max(1, min(os.cpu_count() or 1, scopes // SCOPES_PER_WORKER))


def _work(conn: Connection, payload: dict[str, Any]) -> None:
    """In a worker process: scan its scopes with the IAM it was given; send the ScanResult."""
    from kmsaudit.collect import Collector
    from kmsaudit.logging import configure
    from kmsaudit.scan import run_scan

    configure(**payload["logging"])
    config: Config = payload["config"]
    collector = Collector(config, only=dict.fromkeys(payload["scopes"]), audit_scope=payload["audit_scope"])
    try:
        result = asyncio.run(
            run_scan(config, collector=collector, known=payload["known"], today=payload["today"], shared_lints=False)
        )
        conn.send(result)
    finally:
        conn.close()


async def run_parallel(
    config: Config,
    groups: Sequence[Sequence[tuple[str, str]]],
    audit_scope: Any,
    known: Mapping[str, str] | None,
    today: date | None,
) -> list[ScanResult | list[ScopeStatus]]:
    """Each group of scopes in its own process; a group's ScanResult, or its scopes failed."""
    from kmsaudit.logging import CURRENT

    context = multiprocessing.get_context("spawn")  # no fork of a running event loop or its sockets

    async def one(group: Sequence[tuple[str, str]]) -> ScanResult | list[ScopeStatus]:
        receive, send = context.Pipe(duplex=False)
        subset = None
        if known is not None:
            prefixes = tuple(f":{region}:{account}:" for account, region in group)
            subset = {arn: h for arn, h in known.items() if any(p in arn for p in prefixes)}
        payload = {
            "config": config,
            "scopes": list(group),
            "audit_scope": audit_scope,
            "known": subset,
            "today": today,
            "logging": dict(CURRENT),
        }
        process = context.Process(target=_work, args=(send, payload), daemon=True)
        started = time.monotonic()
        process.start()
        send.close()
        try:
            result: ScanResult = await asyncio.to_thread(receive.recv)
            return result
        except (EOFError, OSError) as exc:
            await asyncio.to_thread(process.join, 5)
            reason = f"worker process died (exit code {process.exitcode}) before reporting its scopes"
            log.error("scan.worker_failed", scopes=len(group), reason=reason, error=str(exc)[:200])
            return [ScopeStatus(a, r, False, 0, reason, "worker") for a, r in group]
        finally:
            receive.close()
            if process.is_alive():
                await asyncio.to_thread(process.join, 5)
            log.info("scan.worker_done", scopes=len(group), seconds=round(time.monotonic() - started, 2))

    return list(await asyncio.gather(*(one(g) for g in groups)))


def merge_attempts(results: Sequence[ScanResult], own: Counter[tuple[str, str, str]]) -> Counter[tuple[str, str, str]]:
    total = Counter(own)
    for result in results:
        total.update(dict(result.attempts))
    return total
