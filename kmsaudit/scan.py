"""One pass of the pipeline: collect → evaluate, scope by scope (SPEC §6 `scan`)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

import structlog

from kmsaudit.collect import Collector
from kmsaudit.collect.api import RequestObserver
from kmsaudit.config import Config
from kmsaudit.evaluator import evaluate_keys
from kmsaudit.model import Finding, Lint, ScanResult, ScopeStatus

log = structlog.get_logger("kmsaudit.scan")


async def run_scan(
    config: Config,
    *,
    observer: RequestObserver | None = None,
    progress: Callable[[str, int], None] | None = None,
    collector: Collector | None = None,
) -> ScanResult:
    started = time.time()
    collector = collector or Collector(config, observer=observer, progress=progress)
    findings: list[Finding] = []
    lints: list[Lint] = []
    statuses: list[ScopeStatus] = []
    keys = 0
    async for scope in collector.scopes():
        policies = tuple(
            (k.arn, k.policy if isinstance(k.policy, str) or k.policy is None else str(k.policy)) for k in scope.keys
        )
        statuses.append(
            ScopeStatus(scope.account, scope.region, scope.ok, len(scope.keys), scope.error, scope.error_code, policies)
        )
        if not scope.ok:
            continue
        keys += len(scope.keys)
        assert collector.audit_scope is not None
        # CPU-bound: a thread keeps the event loop (other scopes' requests) moving meanwhile.
        evaluation = await asyncio.to_thread(evaluate_keys, scope.keys, collector.audit_scope)
        findings.extend(evaluation.findings)
        lints.extend(lint for lint in evaluation.lints if lint.key_arn)
    if collector.audit_scope is not None:
        lints.extend(lint for lint in collector.audit_scope.lints)
    gc.collect()
    result = ScanResult(
        findings=tuple(findings),
        lints=tuple(lints),
        scopes=tuple(sorted(statuses, key=lambda s: (s.account, s.region))),
        iam_failures=dict(collector.iam_failures),
        started_at=started,
        finished_at=time.time(),
        requests=collector.api.requests,
        throttled=collector.api.throttled,
        keys=keys,
    )
    log.info(
        "scan.done",
        keys=keys,
        findings=len(findings),
        scopes=len(statuses),
        failed_scopes=len(result.failed_scopes),
        requests=result.requests,
        throttled=result.throttled,
        seconds=round(result.finished_at - started, 2),
    )
    return result
