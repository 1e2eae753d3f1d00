"""What an alert says beside the change (issue #27): one line of why the access exists and the
first verified change that removes it, decided again from the documents kept with the event's
snapshot (Store.explain_stored). Best effort and bounded: an alert is never held back or lost
for want of its explanation — it goes without one, and says where to ask."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from kmsaudit.errors import KmsAuditError
from kmsaudit.formats.explained import why_line
from kmsaudit.store.database import Store

log = structlog.get_logger("kmsaudit.alert")
MAX_EXPLAINED = 25  # events explained per delivery round (the rest say where to ask)


def _finding(event: dict[str, Any]) -> dict[str, Any] | None:
    after = event.get("after")
    return after if isinstance(after, dict) and after.get("id") and after.get("key_arn") else None


def explain_events(path: str | Path, items: Sequence[dict[str, Any]], trusted: Sequence[str]) -> None:
    """Adds `why` and `remediation` to the events of `items` (outbox rows) that name a finding.
    Opens the store at `path` read-only (it runs in a thread of its own)."""
    if not any(_finding(item["event"]) for item in items):
        return
    try:
        store = Store(path, create=False, read_only=True)
    except KmsAuditError as exc:
        log.warning("alert.unexplained", reason=str(exc))
        return
    try:
        _explain(store, items, trusted)
    finally:
        store.close()


def _explain(store: Store, items: Sequence[dict[str, Any]], trusted: Sequence[str]) -> None:
    seen: dict[str, dict[str, Any]] = {}
    scopes: dict[int, Any] = {}
    explained = 0
    for item in items:
        event = item["event"]
        finding = _finding(event)
        if finding is None or "why" in event:
            continue
        event_id = str(event.get("id"))
        if event_id in seen:
            event.update(seen[event_id])
            continue
        extra: dict[str, Any] = {"why": f"kmsaudit explain {finding['id']}", "remediation": None}
        if explained < MAX_EXPLAINED:
            explained += 1
            try:
                snapshot = int(event.get("snapshot_id") or 0)
                if snapshot not in scopes:
                    scanned = {view.account for view in store.scope_view(snapshot)}
                    scopes[snapshot] = store.stored_scope(snapshot, [*trusted, *sorted(scanned)])
                found = store.explain_stored(snapshot, [finding], scopes[snapshot]).get(str(finding["id"]))
            except (KmsAuditError, ValueError, KeyError, TypeError) as exc:
                log.warning("alert.unexplained", event_id=event_id, reason=f"{type(exc).__name__}: {exc}")
                found = None
            if found is not None:
                explanation, remediation = found
                extra["why"] = why_line(explanation)
                if remediation:
                    first = remediation[0]
                    extra["remediation"] = {
                        k: first.get(k) for k in ("kind", "summary", "verified", "command", "grant_id") if k in first
                    }
        seen[event_id] = extra
        event.update(extra)


MAX_EXPORT_KEYS = 200  # keys whose findings one export round explains (the rest say where to ask)


def explain_findings(
    path: str | Path, findings: Sequence[dict[str, Any]], trusted: Sequence[str], max_keys: int = MAX_EXPORT_KEYS
) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Explanations of findings of the latest snapshot (an export sends those), by finding id;
    empty when the store cannot be read (exports go without). Runs in a thread of its own."""
    if not findings:
        return {}
    try:
        store = Store(path, create=False, read_only=True)
    except KmsAuditError as exc:
        log.warning("export.unexplained", reason=str(exc))
        return {}
    try:
        snapshot = store.latest_snapshot()
        if snapshot is None:
            return {}
        scanned = {view.account for view in store.scope_view(snapshot)}
        scope = store.stored_scope(snapshot, [*trusted, *sorted(scanned)])
        return store.explain_stored(snapshot, findings, scope, max_keys=max_keys)
    except (KmsAuditError, ValueError, KeyError, TypeError) as exc:
        log.warning("export.unexplained", reason=f"{type(exc).__name__}: {exc}")
        return {}
    finally:
        store.close()
