"""One pass of the pipeline (DESIGN.md): collect → evaluate, scope by scope; then the snapshot with
its drift and alerts, retention, delivery and metrics. The CLI, the daemon and the demo all call
`scan_and_record`."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import structlog

from kmsaudit.acceptance.matcher import Acceptance
from kmsaudit.collect import Collector
from kmsaudit.collect.api import RequestObserver
from kmsaudit.config.settings import Config
from kmsaudit.delivery.alerts import HttpSink, baseline_router, deliver, router
from kmsaudit.errors import StoreError
from kmsaudit.evaluator import AuditScope
from kmsaudit.metrics import Metrics, scan_counters
from kmsaudit.model import (
    DriftEvent,
    Lint,
    ScanResult,
)
from kmsaudit.run.assemble import Outcome, assemble
from kmsaudit.run.pipeline import scan_acceptance, scope_part
from kmsaudit.run.workers import largest_first, run_parallel, usable_cores, worker_count
from kmsaudit.store.database import Store, writer_lock

log = structlog.get_logger("kmsaudit.scan")
UNUSED_AFTER_DAYS = 30


async def run_scan(
    config: Config,
    *,
    observer: RequestObserver | None = None,
    progress: Callable[[str, int], None] | None = None,
    collector: Collector | None = None,
    known: Mapping[str, str] | None = None,
    today: date | None = None,
) -> ScanResult:
    """One collection and evaluation. `known`: key ARN -> policy hash of the last good states;
    with it, only the policies that changed keep their text until the snapshot is written."""
    result, _ = await _scan(config, observer, progress, collector, known, today)
    return result


async def _scan(
    config: Config,
    observer: RequestObserver | None,
    progress: Callable[[str, int], None] | None,
    collector: Collector | None,
    known: Mapping[str, str] | None,
    today: date | None,
) -> tuple[ScanResult, AuditScope | None]:
    """run_scan, and the principals and organization it read (what the daemon's event re-reads
    evaluate against until the next full scan)."""
    if collector is None and planned_workers(config, known) > 1:
        return await _run_on_processes(config, observer, progress, known, today)
    started = time.time()
    collector = collector or Collector(config, observer=observer, progress=progress)
    outcome = await _read_here(config, collector, known, today)
    return assemble(config, started, [outcome], collector, 1), collector.audit_scope


async def _read_here(
    config: Config, collector: Collector, known: Mapping[str, str] | None, today: date | None
) -> Outcome:
    """Every scope the collector reads, in this process, evaluated and judged as it comes."""
    outcome = Outcome()
    acceptance: Acceptance | None = None
    first = True
    async for scope in collector.scopes():
        if first:  # the organization is known once scopes come
            acceptance, first = scan_acceptance(config, collector.organization, today), False
        assert collector.audit_scope is not None
        outcome.parts.append(await scope_part(scope, collector.audit_scope, acceptance, known))
    outcome.attempts.update(collector.api.attempts)
    outcome.matched = frozenset(acceptance.matched) if acceptance else frozenset()
    return outcome


def planned_workers(config: Config, known: Mapping[str, str] | None = None) -> int:
    """Processes a scan would use, from the config (the accounts and regions it names) and the
    last snapshot's keys; with an `[organization]`, members count once discovered
    (`_run_on_processes` decides then)."""
    scopes = sum(len(config.regions_of(a)) for a in config.accounts)
    if config.organization is not None:
        return config.scan.processes or usable_cores()
    return worker_count(config, scopes, len(known or ()))


async def _run_on_processes(
    config: Config,
    observer: RequestObserver | None,
    progress: Callable[[str, int], None] | None,
    known: Mapping[str, str] | None,
    today: date | None,
) -> tuple[ScanResult, AuditScope | None]:
    """IAM and the organization read here once; the scopes shared out to worker processes
    (kmsaudit/run/workers.py), or read here if they are too few to be worth a process; their parts
    merged into one ScanResult for one writer."""
    started = time.time()
    parent = Collector(config, observer=observer, progress=progress)
    await parent.audit_only()
    assert parent.audit_scope is not None
    scopes = [(t.account, r) for t in parent.targets for r in t.regions]
    n = worker_count(config, len(scopes), len(known or ()))
    if progress is not None:
        progress("planned", len(scopes))
    if n <= 1:  # one process after all: the scopes here, with the IAM just read
        only = Collector(
            config,
            observer=observer,
            progress=progress,
            only=dict.fromkeys(scopes),
            audit_scope=parent.audit_scope,
            credentials=parent.handed_over,
        )
        outcomes = [await _read_here(config, only, known, today)]
    else:
        outcomes = await run_parallel(
            config, largest_first(scopes, known), n, parent.audit_scope, known, today, progress, parent.handed_over
        )
    return assemble(config, started, outcomes, parent, n, attempts=Counter(parent.api.attempts)), parent.audit_scope


async def _export(config: Config, store: Store, snapshot_id: int, now: float) -> int:
    """Queue each export's share of the snapshot (its findings as `findings` shows them: a failed
    scope's last good state, never an archive), then send what is due; returns what still waits."""
    from kmsaudit.delivery.securityhub import build_exports

    exports = build_exports(config.export, config.scan, config.trust.accounts)
    view = store.findings(snapshot_id)
    for export in exports:
        active, archived = store.queue_export(export.name, view, now)
        log.info("export.queued", export=export.name, active=active, archived=archived)
    deadline = time.monotonic() + EXPORT_SECONDS
    await asyncio.gather(*(export.deliver_due(store, deadline) for export in exports))
    return store.pending_alerts()


def unused_acceptances(
    seen: Mapping[str, tuple[float, float | None]], configured: frozenset[str], matched: frozenset[str], now: float
) -> list[Lint]:
    """Acceptance entries that accepted nothing for 30 days (README "Accepting known access"):
    known access that went away, or an entry that never fit; a lint, so it can be removed."""
    lints = []
    for entry in sorted(configured - matched):
        first, last = seen.get(entry, (now, None))
        if now - (last if last is not None else first) > UNUSED_AFTER_DAYS * 86400:
            lints.append(
                Lint(
                    "acceptance-unused",
                    f"acceptance entry {entry!r} has accepted nothing for over {UNUSED_AFTER_DAYS} days: remove it",
                    policy=entry,
                )
            )
    return lints


def prune(path: str, retention_days: float) -> int:
    store = Store(path, create=False)
    try:
        return store.prune(retention_days)
    finally:
        store.close()


EXPORT_SECONDS = 60.0  # a scan's time for exports; what is left waits for the next


@dataclass(frozen=True, slots=True)
class Recorded:
    result: ScanResult
    snapshot_id: int
    events: list[DriftEvent]
    pending_alerts: int
    audit_scope: AuditScope | None = None  # the principals and organization the scan read


async def scan_and_record(
    config: Config,
    sinks: Sequence[HttpSink] = (),
    *,
    metrics: Metrics | None = None,
    progress: Callable[[str, int], None] | None = None,
    today: date | None = None,
    collector: Collector | None = None,
) -> Recorded:
    """The whole pipeline once: scan, store the snapshot with its drift, enqueued alerts and
    counters (one transaction), apply retention, deliver what is due, update the metrics from
    the database (so a failed scope shows its last good state there too). `today`: the date
    acceptance entries expire by (default: the UTC date). `collector`: a prepared one (the
    daemon's, or a re-read of some keys for a CloudTrail event: README "Real-time detection")."""
    store = Store(config.store.path)  # an unusable path is the user's to fix, before any AWS call
    try:
        with writer_lock(config.store.path):  # one writer at a time, for the whole pass
            return await _record(config, sinks, store, metrics, progress, today, collector)
    finally:
        store.close()


async def _record(
    config: Config,
    sinks: Sequence[HttpSink],
    store: Store,
    metrics: Metrics | None,
    progress: Callable[[str, int], None] | None,
    today: date | None,
    collector: Collector | None = None,
) -> Recorded:
    """The pipeline once, the writer lock held (scan_and_record)."""
    partial = collector is not None and collector.only is not None
    # An event's re-read needs the policy hashes of the scopes it touches, not the estate's.
    known = store.known_policies(collector.only if collector is not None and collector.only is not None else None)
    result, audit_scope = await _scan(config, None, progress, collector, known, today)
    unused = unused_acceptances(
        store.acceptance_seen(), result.accept_configured, result.accept_matched, result.finished_at
    )
    if unused:
        result = dataclasses.replace(result, lints=result.lints + tuple(unused))
    snapshot_id, events = store.save_scan(
        result, route=router(sinks), count=scan_counters, route_baseline=baseline_router(sinks)
    )
    try:  # off the event loop (the daemon's /healthz, the sinks' deliveries), on its own connection
        if not partial:  # an event's re-read leaves retention to the scheduled scans
            await asyncio.to_thread(prune, config.store.path, config.store.retention_days)
    except StoreError as exc:
        log.error("store.prune_failed", reason=str(exc))  # the next scan prunes again; nothing lost
    pending = (await deliver(store, sinks, trusted=config.trust.accounts))[1] if sinks else 0
    if config.export:
        pending = await _export(config, store, snapshot_id, result.finished_at)
    if metrics is not None:
        metrics.update(store, snapshot_id)
    return Recorded(result, snapshot_id, events, pending, audit_scope)
