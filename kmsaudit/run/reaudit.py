"""The daemon's event re-reads (README "Real-time detection", issue #24): what a batch of
CloudTrail events changed, read and recorded like a scan; which full scan covers an event (one
that read its scope after it); the keys an alias event names. A mixin of `Daemon`
(kmsaudit/run/daemon.py), which owns the state it reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from kmsaudit.collect import Collector, SharedSessions
from kmsaudit.model import ORGANIZATION, ScanResult
from kmsaudit.run.events import Change, Message
from kmsaudit.run.scan import scan_and_record
from kmsaudit.store.database import Store

if TYPE_CHECKING:
    from kmsaudit.config.settings import Config
    from kmsaudit.delivery.alerts import HttpSink
    from kmsaudit.evaluator import AuditScope
    from kmsaudit.metrics import Metrics

log = structlog.get_logger("kmsaudit.daemon")
# A message must have been in the queue this long (monotonic seconds) before a full scan started
# for that scan to cover it: SQS's hosts' clocks and its millisecond stamps agree within that.
MARGIN = 1.0


class EventReaudit:
    config: Config
    metrics: Metrics
    sinks: list[HttpSink]
    writing: asyncio.Lock
    audit_scope: AuditScope | None
    event_sessions: SharedSessions | None
    read_at: dict[tuple[str, str], float]
    iam_read_at: dict[str, float]
    organization_read_at: float | None

    async def scan_once(self) -> ScanResult:
        raise NotImplementedError  # Daemon's

    def _read_by(self, result: ScanResult, started: float) -> None:
        """What a full scan read (a scope it read whole, an account whose IAM it read, the
        organization): an event whose message was in the queue before `started` (monotonic) is
        in it (issue #24, defect 4)."""
        for scope in result.scopes:
            # A scope with keys it could not read has not read them: an event on one is not
            # covered (the common case: a policy change that locked the auditor out).
            if scope.ok and scope.partial is None and not scope.unreadable and scope.account != ORGANIZATION:
                self.read_at[(scope.account, scope.region)] = started
        organization_failed = any(s.account == ORGANIZATION and not s.ok for s in result.scopes)
        for account in {s.account for s in result.scopes} - {ORGANIZATION} - set(result.iam_failures):
            self.iam_read_at[account] = started
        if not organization_failed:
            self.organization_read_at = started

    def _read_since(self, change: Change) -> float | None:
        """When (monotonic) the last full scan that read what `change` changed started (None:
        none did)."""
        if change.kind == "iam":
            return self.iam_read_at.get(change.account)
        if change.kind == "organization":
            return self.organization_read_at
        return self.read_at.get((change.account, change.region))

    async def reaudit(self, messages: Sequence[Message]) -> set[str]:
        """What a batch of CloudTrail events changed, recorded like a scan (README "Real-time
        detection"): the keys they name re-read and re-evaluated with the IAM of the last full
        scan; an IAM or Organizations change, a full scan (one for a whole burst: a message
        queued before a full scan that read its scope started is already in it). Returns, once committed,
        the receipts of the messages handled: a change whose re-read failed is not, so its
        message stays in the queue for a retry (issue #24, defect 1)."""
        handled = {m.receipt for m in messages if not isinstance(m.outcome, Change)}
        pending: list[tuple[Message, Change]] = []
        for m in messages:
            c = m.outcome
            if not isinstance(c, Change):
                continue
            read = self._read_since(c)
            # Not CloudTrail's eventTime against our clock: either may be hours off (a skewed
            # clock counted a change made after the scan as in it). The message's time in the
            # queue, by SQS's clock, on our monotonic clock (kmsaudit/run/receive.py); in doubt,
            # re-read.
            if read is not None and m.queued_by + MARGIN < read:
                self.metrics.count_event(c.source, c.name, "covered")
                handled.add(m.receipt)
            else:
                pending.append((m, c))
        if any(c.kind in ("iam", "organization") for _, c in pending):
            result = await self.scan_once()
            done = time.time()
            for m, c in pending:
                if self._read_in(result, c):
                    self.metrics.count_event(c.source, c.name, "full-scan")
                    self.metrics.event_to_alert.observe(max(0.0, done - c.event_time))
                    handled.add(m.receipt)
                else:
                    self.metrics.count_event(c.source, c.name, "failed")
            return handled
        only: dict[tuple[str, str], set[str] | None] = {}
        known = self._known_scopes()
        wanted: list[tuple[Message, Change]] = []
        for m, c in pending:
            arns = self._keys_of(c)
            scope = (c.account, c.region)
            if not arns or scope not in known:
                self.metrics.count_event(c.source, c.name, "unknown-scope" if arns else "unresolved")
                handled.add(m.receipt)
                continue
            if not known[scope]:
                only[scope] = None  # never read whole: no state to change one key of; read it all
            elif (keys := only.setdefault(scope, set())) is not None:
                keys.update(arns)
            wanted.append((m, c))
        if not only or self.audit_scope is None:
            return handled
        async with self.writing:
            if self.event_sessions is None:
                self.event_sessions = SharedSessions(self.config)
                await self.event_sessions.sessions.__aenter__()
            collector = Collector(
                self.config,
                only={k: None if v is None else frozenset(v) for k, v in only.items()},
                audit_scope=self.audit_scope,
                reuse=self.event_sessions,
                reread=True,
            )
            recorded = await scan_and_record(self.config, self.sinks, metrics=self.metrics, collector=collector)
        done = time.time()
        for m, c in wanted:
            if self._read_in(recorded.result, c):
                self.metrics.count_event(c.source, c.name, "reaudited")
                self.metrics.event_to_alert.observe(max(0.0, done - c.event_time))
                handled.add(m.receipt)
            else:
                self.metrics.count_event(c.source, c.name, "failed")
        log.info(
            "events.reaudited",
            keys=sum(len(v) for v in only.values() if v is not None),
            whole_scopes=sum(v is None for v in only.values()),
            events=len(wanted),
            failed=sum(m.receipt not in handled for m, _ in wanted),
        )
        return handled

    def _read_in(self, result: ScanResult, change: Change) -> bool:
        """Whether `result` read what `change` changed: its scope (and its keys), its account's
        IAM, the organization."""
        if change.kind == "organization":
            return not any(s.account == ORGANIZATION and not s.ok for s in result.scopes)
        if change.kind == "iam":
            return change.account not in result.iam_failures and any(s.account == change.account for s in result.scopes)
        for scope in result.scopes:
            if (scope.account, scope.region) == (change.account, change.region):
                unreadable = {arn for arn, _ in scope.unreadable}
                return scope.ok and not (unreadable & self._keys_of(change))
        return False

    def _keys_of(self, change: Change) -> set[str]:
        """The keys to re-read for `change`: the key it names, and for an alias event the key
        the alias named in the last state too (which loses it; DeleteAlias names no key)."""
        keys = {change.key_arn} if change.key_arn else set()
        if change.alias:
            previous = self._alias_target(change)
            if previous:
                keys.add(previous)
        return keys

    def _known_scopes(self) -> dict[tuple[str, str], bool]:
        store = Store(self.config.store.path, create=False)
        try:
            return store.event_scopes()
        finally:
            store.close()

    def _alias_target(self, change: Change) -> str:
        """The key an alias named in the last state (DeleteAlias carries no key id)."""
        store = Store(self.config.store.path, create=False)
        try:
            state = store.last_good_state(change.account, change.region)
        finally:
            store.close()
        for arn, names in (state.names if state else {}).items():
            if change.alias in names.get("aliases", ()):
                return arn
        return ""
