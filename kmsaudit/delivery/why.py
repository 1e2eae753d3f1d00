"""What an alert or an exported finding says beside the change (issue #27): one line of why the
access exists and the first verified change that removes it, decided again from the documents
kept with the snapshot (Store.explain_stored). Best effort and bounded in time: an alert or an
export is never held back or lost for want of its explanation — past the budget, or when the
documents cannot be read, it goes without one and says where to ask (`kmsaudit explain ID`).
Runs in a thread of its own, on a read-only connection of its own."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from kmsaudit.errors import KmsAuditError
from kmsaudit.formats.explained import why_line
from kmsaudit.store.database import Store

log = structlog.get_logger("kmsaudit.alert")
ALERT_SECONDS = 5.0  # explaining a delivery round's alerts, at most
EXPORT_SECONDS = 10.0  # explaining an export round's findings, at most
MAX_EXPORT_KEYS = 200
_FAILURES = (KmsAuditError, sqlite3.Error, ValueError, KeyError, TypeError, RecursionError)

Explained = dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]


def _decided_again(
    path: str | Path,
    by_snapshot: dict[int | None, list[dict[str, Any]]],
    trusted: Sequence[str],
    seconds: float,
    max_keys: int,
) -> Explained:
    """Findings of each snapshot (None: the latest) decided again, on one read-only connection,
    until `seconds` have passed; what the store cannot give is left out (logged)."""
    if not any(by_snapshot.values()):
        return {}
    deadline = time.monotonic() + seconds
    try:
        store = Store(path, create=False, read_only=True)
    except _FAILURES as exc:
        log.warning("explain.unavailable", reason=f"{type(exc).__name__}: {exc}")
        return {}
    found: Explained = {}
    try:
        for snapshot, findings in by_snapshot.items():
            at = snapshot if snapshot is not None else store.latest_snapshot()
            if at is None or not findings or time.monotonic() >= deadline:
                continue
            scope = store.stored_scope(at, trusted)
            found |= store.explain_stored(at, findings, scope, max_keys=max_keys, deadline=deadline)
    except _FAILURES as exc:
        log.warning("explain.unavailable", reason=f"{type(exc).__name__}: {exc}")
    finally:
        store.close()
    return found


def _finding(event: dict[str, Any]) -> dict[str, Any] | None:
    after = event.get("after")
    return after if isinstance(after, dict) and after.get("id") and after.get("key_arn") else None


def first_fix(remediation: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not remediation:
        return None
    first = remediation[0]
    return {k: first.get(k) for k in ("kind", "summary", "verified", "command", "grant_id") if k in first}


def explain_events(path: str | Path, items: Sequence[dict[str, Any]], trusted: Sequence[str]) -> None:
    """Adds `why` and `remediation` to the events of `items` (outbox rows) that name a finding,
    within ALERT_SECONDS; the others say where to ask."""
    by_snapshot: dict[int | None, list[dict[str, Any]]] = {}
    for item in items:
        finding = _finding(item["event"])
        if finding is not None and "why" not in item["event"]:
            by_snapshot.setdefault(int(item["event"].get("snapshot_id") or 0), []).append(finding)
    found = _decided_again(path, dict(sorted(by_snapshot.items())), trusted, ALERT_SECONDS, 10**9)
    for item in items:
        event = item["event"]
        finding = _finding(event)
        if finding is None or "why" in event:
            continue
        decided = found.get(str(finding["id"]))
        event["why"] = why_line(decided[0]) if decided else f"kmsaudit explain {finding['id']}"
        event["remediation"] = first_fix(decided[1]) if decided else None


def explain_findings(path: str | Path, findings: list[dict[str, Any]], trusted: Sequence[str]) -> Explained:
    """Explanations of findings of the latest snapshot (what an export sends), by finding id,
    within EXPORT_SECONDS and MAX_EXPORT_KEYS keys; empty when the store cannot be read."""
    return _decided_again(path, {None: findings}, trusted, EXPORT_SECONDS, MAX_EXPORT_KEYS)
