"""The one place a scan's result is assembled from its scopes' parts, whichever way they were read
(this process, worker processes, a re-read of some keys): each scope read now comes as a
ScopePart, each scope lost with a worker as a failed ScopeStatus (`lost`), and the collector that
read IAM and the organization adds what it knows of them — its lints, the accounts whose IAM
failed, and a failed discovery, never a clean estate. The store then writes the snapshot from it
(kmsaudit/store/database.py `save_scan`)."""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from kmsaudit.evidence import ORG_SUBJECT, iam_subject, organization_text, principals_text
from kmsaudit.model import ORGANIZATION, Finding, Lint, ScanResult, ScopeStatus

if TYPE_CHECKING:
    from kmsaudit.collect import Collector
    from kmsaudit.config.settings import Config
    from kmsaudit.evaluator import AuditScope

log = structlog.get_logger("kmsaudit.scan")

Scope = tuple[str, str]  # (account, region)


@dataclass(frozen=True, slots=True)
class ScopePart:
    """One scope's share of a scan: what a worker process sends as soon as the scope is read."""

    status: ScopeStatus
    findings: tuple[Finding, ...] = ()
    lints: tuple[Lint, ...] = ()
    keys: int = 0
    evaluation_cpu: float = 0.0


@dataclass
class Outcome:
    """What one process contributed: its scopes' parts, the scopes it lost (a worker that died),
    and, unless it died, its request attempts and the acceptance entries that matched."""

    parts: list[ScopePart] = field(default_factory=list)
    attempts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    matched: frozenset[str] = frozenset()
    lost: list[ScopeStatus] = field(default_factory=list)
    max_rss_mb: int = 0  # the worker's peak memory (README "Sizing")


def lost(scopes: Iterable[Scope], reason: str) -> list[ScopeStatus]:
    """Scopes nobody could read: failed, so their last good state carries over."""
    return [ScopeStatus(account, region, False, 0, reason, "worker") for account, region in scopes]


def read_evidence(scope: AuditScope | None) -> tuple[tuple[str, str], ...]:
    """The IAM of every account whose IAM was read, and the organization, as the evaluator read
    them (kept for `kmsaudit explain`); an account whose IAM failed keeps what was last read."""
    if scope is None:
        return ()
    out = []
    for account in sorted(scope.audited):
        iam = scope.iam.get(account)
        out.append((iam_subject(account), principals_text(cp.source for cp in iam.principals) if iam else "[]"))
    if scope.organization is not None:
        out.append((ORG_SUBJECT, organization_text(scope.organization)))
    return tuple(out)


def assemble(
    config: Config,
    started: float,
    outcomes: Sequence[Outcome],
    shared: Collector,
    processes: int,
    attempts: Counter[tuple[str, str, str]] | None = None,
) -> ScanResult:
    """The scan's result from every process's outcome, with what `shared`, the collector that read
    IAM and the organization, says of them. `attempts`: requests made beside the outcomes (the
    scan's own process, when workers read the scopes). Logged once."""
    parts = [p for o in outcomes for p in o.parts]
    statuses = [p.status for p in parts] + [s for o in outcomes for s in o.lost]
    if shared.organization_error:
        # The member accounts it would have listed are not scanned: a failure, never a clean estate.
        statuses.append(
            ScopeStatus(
                ORGANIZATION,
                "global",
                False,
                error=f"organization discovery failed: {shared.organization_error}",
                error_code=shared.organization_error_code or "organization",
            )
        )
    counted: Counter[tuple[str, str, str]] = Counter(attempts or {})
    for outcome in outcomes:
        counted.update(outcome.attempts)
    gc.collect()
    result = ScanResult(
        findings=tuple(f for p in parts for f in p.findings),
        lints=tuple(lint for p in parts for lint in p.lints)
        + (tuple(shared.audit_scope.lints) if shared.audit_scope is not None else ()),
        scopes=tuple(sorted(statuses, key=lambda s: (s.account, s.region))),
        iam_failures=dict(shared.iam_failures),
        started_at=started,
        finished_at=time.time(),
        requests=sum(counted.values()),
        throttled=sum(n for (_, _, outcome), n in counted.items() if outcome == "throttled"),
        keys=sum(p.keys for p in parts),
        attempts=tuple(sorted(counted.items())),
        accept_configured=frozenset(e.id for e in config.accept),
        accept_matched=frozenset().union(*(o.matched for o in outcomes)),
        evaluation_cpu=sum(p.evaluation_cpu for p in parts),
        # SPEC §5: the store refuses a snapshot that does not account for every one of these; a
        # re-read of some keys accounts for the rest by carrying them over unchanged.
        reread=shared.rereads,
        expected=frozenset() if shared.rereads else shared.expected,
        evidence=() if shared.rereads else read_evidence(shared.audit_scope),
    )
    log.info(
        "scan.done",
        keys=result.keys,
        findings=len(result.findings),
        scopes=len(statuses),
        failed_scopes=len(result.failed_scopes),
        requests=result.requests,
        throttled=result.throttled,
        processes=processes,
        seconds=round(result.finished_at - started, 2),
    )
    return result
