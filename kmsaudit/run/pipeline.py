"""One scope through the pipeline (DESIGN.md): as read, evaluated and judged against the
acceptance entries, ready for the snapshot. Shared by a scan's own process (kmsaudit/run/scan.py) and
its worker processes (kmsaudit/run/workers.py), which import no more than this needs: no store, no
alerting, no metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime

from kmsaudit.acceptance.matcher import NO_FACTS, Acceptance, KeyFacts
from kmsaudit.config.settings import Config
from kmsaudit.drift import policy_hash
from kmsaudit.evaluator import AuditScope, evaluate_keys
from kmsaudit.evidence import key_text
from kmsaudit.gcpause import gc_paused
from kmsaudit.model import Evaluation, Finding, KeyRecord, Organization, ScopeResult, ScopeStatus
from kmsaudit.run.assemble import ScopePart


def scan_acceptance(config: Config, org: Organization | None, today: date | None) -> Acceptance | None:
    """The scan's acceptance entries, ready to judge findings; None when none are configured."""
    if not config.accept:
        return None
    return Acceptance.for_scan(
        config.accept, today or datetime.now(UTC).date(), {org.org_id: org.accounts} if org else None
    )


async def scope_part(
    scope: ScopeResult, audit_scope: AuditScope, acceptance: Acceptance | None, known: Mapping[str, str] | None
) -> ScopePart:
    """A scope as read, evaluated and judged; with `known` (key ARN -> policy hash of the last good
    states), only the policies that changed keep their text until the snapshot is written."""
    if not scope.ok:
        return ScopePart(ScopeStatus(scope.account, scope.region, False, 0, scope.error, scope.error_code))
    # CPU-bound: a thread keeps the event loop (other scopes' requests) moving meanwhile.
    # Known-good access is judged there too: reported and stored, marked, never alerted.
    evaluation, judged, cpu = await asyncio.to_thread(_evaluate, scope.keys, audit_scope, acceptance)
    names = tuple((k.arn, k.aliases, k.key_manager) for k in scope.keys if k.aliases or k.key_manager != "CUSTOMER")
    # The policies as the evaluator read them, in canonical form: KMS's reordering is no change.
    unreadable = tuple((k.arn, k.unreadable) for k in scope.keys if k.unreadable)
    hashes: tuple[tuple[str, str], ...] = ()
    texts = evaluation.policies
    if known is not None:
        hashes = tuple((arn, policy_hash(text)) for arn, text in texts)
        texts = tuple(pair for pair, (_, digest) in zip(texts, hashes, strict=True) if known.get(pair[0]) != digest)
    status = ScopeStatus(
        scope.account,
        scope.region,
        True,
        len(scope.keys),
        key_policies=texts,
        key_hashes=hashes,
        key_names=names,
        unreadable=unreadable,
        partial=scope.partial,
        key_evidence=tuple((k.arn, key_text(k)) for k in scope.keys if not k.unreadable),
    )
    lints = tuple(lint for lint in evaluation.lints if lint.key_arn)
    return ScopePart(status, tuple(judged), lints, len(scope.keys), cpu)


def _evaluate(
    keys: Sequence[KeyRecord], audit_scope: AuditScope, acceptance: Acceptance | None
) -> tuple[Evaluation, Sequence[Finding], float]:
    """A scope's evaluation, and its findings judged against the acceptance entries (if any), and
    the CPU seconds that took (this thread's)."""
    started = time.thread_time()
    with gc_paused():
        evaluation = evaluate_keys(keys, audit_scope)
        judged: Sequence[Finding] = evaluation.findings
        if acceptance is not None:
            facts = {k.arn: KeyFacts(k.aliases, dict(k.tags)) for k in keys}
            judged = [acceptance.judge(f, facts.get(f.key_arn, NO_FACTS)) for f in evaluation.findings]
    return evaluation, judged, time.thread_time() - started
