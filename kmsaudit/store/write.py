"""Writing a snapshot: the one place every path commits through — a full scan, a scan on worker
processes, an event's re-read of some keys (SPEC §5, "Every snapshot accounts for every configured
scope"). Each scope of the snapshot is read now, carried over unchanged from the one before (its
read time kept), or failed (its last good state shown, a `scope-failed` event); a result that
leaves a configured scope unaccounted for commits nothing (IncompleteSnapshot). A part of Store
(kmsaudit/store/database.py), in its own file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlite_utils

from kmsaudit.drift import ScopeState, baseline_events, diff_scope, policy_hash, scope_failed
from kmsaudit.errors import IncompleteSnapshot
from kmsaudit.evidence import key_subject
from kmsaudit.model import ORGANIZATION, DriftEvent, ScanResult, ScopeStatus
from kmsaudit.store.migrations import _pack

# (metric name, labels, increment): what one scan adds to the cumulative counters
CounterIncrements = Iterable[tuple[str, tuple[tuple[str, str], ...], float]]
Scope = tuple[str, str]
# A scopes row as written: (account, region, ok, error, error_code, keys, state, read_at, attempted_at)
Row = tuple[str, str, int, str, str, int, str | None, float | None, float | None]


def _rereads(result: ScanResult) -> bool:
    """A result that reads only some scopes (an event's re-read), or some keys of a scope."""
    return result.reread or any(s.partial is not None for s in result.scopes)


def _counts(state: ScopeState | None) -> tuple[int, int]:
    return (len(state.keys), len(state.findings)) if state is not None else (0, 0)


class Writer:
    """Store's snapshot writing; Store provides the database, its transactions and its queries."""

    db: sqlite_utils.Database

    if TYPE_CHECKING:  # what the other parts of Store provide

        def _transaction(self) -> AbstractContextManager[None]: ...

        def last_good_state(self, account: str, region: str) -> ScopeState | None: ...

        def _write_evidence(self, snapshot_id: int, pairs: Iterable[tuple[str, str]]) -> None: ...

        def _record_acceptances(
            self, snapshot_id: int, before: ScopeState | None, after: ScopeState, now: float
        ) -> None: ...

    def _previous_rows(self, snapshot_id: int) -> dict[Scope, Row]:
        """The scopes of the snapshot before `snapshot_id`, as they were written."""
        return {
            (r[0], r[1]): tuple(r)
            for r in self.db.conn.execute(
                "SELECT account, region, ok, error, error_code, keys, state, read_at, attempted_at FROM scopes"
                " WHERE snapshot_id = (SELECT max(id) FROM snapshots WHERE id < ?)",
                [snapshot_id],
            )
        }

    def _previous_iam_failures(self, snapshot_id: int) -> dict[str, str]:
        row = self.db.conn.execute(
            "SELECT iam_failures FROM snapshots WHERE id = (SELECT max(id) FROM snapshots WHERE id < ?)", [snapshot_id]
        ).fetchone()
        return dict(json.loads(row[0])) if row and row[0] else {}

    def _good_read_at(self, account: str, region: str) -> float | None:
        """When the scope's last good state (the last committed: snapshot id, never the wall
        clock) was read completely (its scan's end before read_at): a time kept as data."""
        row = self.db.conn.execute(
            "SELECT coalesce(s.read_at, n.finished_at) FROM scopes s JOIN snapshots n ON n.id = s.snapshot_id"
            " WHERE s.account = ? AND s.region = ? AND s.ok = 1 ORDER BY s.snapshot_id DESC LIMIT 1",
            [account, region],
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def save_scan(
        self,
        result: ScanResult,
        detected_at: float | None = None,
        route: Callable[[DriftEvent], Iterable[str]] | None = None,
        count: Callable[[ScanResult, list[DriftEvent]], CounterIncrements] | None = None,
        route_baseline: Callable[[DriftEvent], Iterable[str]] | None = None,
    ) -> tuple[int, list[DriftEvent]]:
        """Store the snapshot and its drift in one transaction; returns (snapshot id, drift).
        `route` picks each event's alert sinks (the outbox); `count` gives the scan's increments of
        the cumulative counters. Both are written in the same transaction, or not at all.
        `route_baseline` picks the sinks that want a scope's first scan (`on_baseline`): each of
        its findings goes to them as an `added` alert marked `baseline`, never as drift.

        Plain statements inside one `with conn:`: sqlite-utils' insert() commits on its own,
        which would let a crash leave half a snapshot (tests/faults/test_crash.py kills a writer to see).
        """
        now = detected_at if detected_at is not None else time.time()
        named = [(s.account, s.region) for s in result.scopes]
        if len(set(named)) != len(named):
            twice = sorted({s for s in named if named.count(s) > 1})
            raise IncompleteSnapshot(f"a snapshot names scopes twice ({twice[:3]}): nothing committed")
        by_scope: dict[Scope, list[dict[str, Any]]] = {}
        for finding in result.findings:
            by_scope.setdefault((finding.key_account, finding.region), []).append(finding.to_dict())
        events: list[DriftEvent] = []
        baseline: list[DriftEvent] = []
        sql = self.db.conn
        with self._transaction():
            cursor = sql.execute(
                "INSERT INTO snapshots (started_at, finished_at, complete, keys, findings, requests, throttled, lints)"
                " VALUES (?, ?, 0, 0, 0, ?, ?, ?)",
                [
                    result.started_at,
                    result.finished_at,
                    result.requests,
                    result.throttled,
                    _pack(json.dumps([lint.to_dict() for lint in result.lints])),
                ],
            )
            snapshot_id = int(cursor.lastrowid or 0)
            previous = self._previous_rows(snapshot_id)
            # A re-read reads no IAM: it inherits the IAM failures of the snapshot before (SPEC §5:
            # "while an account's IAM cannot be read, its principals' effective access carries
            # over, in a re-read as in a scan"), and passes them on.
            iam_failures = self._previous_iam_failures(snapshot_id) if _rereads(result) else dict(result.iam_failures)
            rows: list[Row] = []
            shown: dict[Scope, tuple[int, int]] = {}  # (keys, findings) of the state each scope shows
            shown_before: dict[Scope, tuple[int, int]] = {}  # and showed in the snapshot before
            for scope in result.scopes:
                where = (scope.account, scope.region)
                if scope.ok:
                    row, state, before = self._read_scope(
                        snapshot_id, result, scope, by_scope.get(where, []), now, iam_failures
                    )
                    events += diff_scope(*where, before, state, snapshot_id=snapshot_id, detected_at=now)
                    if before is None and route_baseline is not None:
                        baseline += baseline_events(*where, state, snapshot_id, now)
                    shown[where] = _counts(state)
                    shown_before[where] = _counts(before) if where in previous else (0, 0)
                else:
                    events.append(
                        scope_failed(*where, scope.error, scope.error_code, snapshot_id=snapshot_id, detected_at=now)
                    )
                    attempted = previous[where][8] if _rereads(result) and where in previous else result.started_at
                    row = (*where, 0, scope.error, scope.error_code, scope.keys, None, None, attempted)
                    shown[where] = _counts(self.last_good_state(*where))  # its last good state answers for it
                    shown_before[where] = shown[where] if where in previous else (0, 0)
                rows.append(row)
            carried = self._carried(result, previous, set(named))
            rows += carried
            missing = result.expected - {(r[0], r[1]) for r in rows}
            if missing:
                raise IncompleteSnapshot(
                    f"the snapshot would not account for {len(missing)} configured scope(s) "
                    f"(e.g. {sorted(missing)[0][0]} {sorted(missing)[0][1]}): nothing committed"
                )
            sql.executemany(
                "INSERT INTO scopes (snapshot_id, account, region, ok, error, error_code, keys, state, read_at,"
                " attempted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(snapshot_id, *row) for row in rows],
            )
            keys, findings = self._totals(snapshot_id, result, shown, shown_before, carried)
            failed = any(not r[2] for r in rows)
            complete = not failed and not iam_failures
            sql.execute(
                "UPDATE snapshots SET keys = ?, findings = ?, complete = ?, iam_failures = ? WHERE id = ?",
                [keys, findings, int(complete), json.dumps(iam_failures) if iam_failures else None, snapshot_id],
            )
            sql.executemany(
                "INSERT OR IGNORE INTO acceptance_entries (entry_id, first_seen_at, last_matched_at)"
                " VALUES (?, ?, NULL)",
                [(entry, now) for entry in sorted(result.accept_configured)],
            )
            sql.executemany(
                "UPDATE acceptance_entries SET last_matched_at = ? WHERE entry_id = ?",
                [(now, entry) for entry in sorted(result.accept_matched)],
            )
            self._write_evidence(snapshot_id, result.evidence)  # IAM and the organization, as read now
            for account, reason in sorted(result.iam_failures.items()):  # not again for what a re-read inherits
                events.append(scope_failed(account, "global", reason, "iam", snapshot_id=snapshot_id, detected_at=now))
            self._write_events(snapshot_id, result, events, baseline, now, route, count, route_baseline)
        return snapshot_id, events

    def _read_scope(
        self,
        snapshot_id: int,
        result: ScanResult,
        scope: ScopeStatus,
        findings: list[dict[str, Any]],
        now: float,
        iam_failed: Mapping[str, str],
    ) -> tuple[Row, ScopeState, ScopeState | None]:
        """A scope read now: its state (with what it could not read carried from the last good
        one: the keys that failed, the effective access of accounts whose IAM failed), its row,
        and that last good state. A re-read of some keys keeps the rest of the scope's state and
        its read time."""
        sql = self.db.conn
        before = self.last_good_state(scope.account, scope.region)
        state = ScopeState.build(
            findings, scope.key_policies, scope.key_names, scope.unreadable, scope.key_hashes
        ).carry(before, iam_failed)
        n_keys = scope.keys
        read_at: float | None = result.started_at
        attempted: float | None = result.started_at
        if scope.partial is not None:  # some keys re-read: not a complete read of the scope
            read_at = self._good_read_at(scope.account, scope.region)
            attempted = None
            if before is not None:
                state = before.replacing(scope.partial, state)
                n_keys = len(state.keys)
        digest = state.digest()
        self._record_acceptances(snapshot_id, before, state, now)
        sql.execute("INSERT OR IGNORE INTO states (digest, body) VALUES (?, ?)", [digest, _pack(state.to_json())])
        known = before.keys if before is not None else {}
        changed = [(arn, text) for arn, text in scope.key_policies if known.get(arn) != policy_hash(text)]
        sql.executemany(
            "INSERT OR IGNORE INTO policies (sha256, text) VALUES (?, ?)",
            [(policy_hash(text), text) for _, text in changed if text],
        )
        sql.executemany(
            "INSERT OR IGNORE INTO policy_versions (snapshot_id, key_arn, sha256) VALUES (?, ?, ?)",
            [(snapshot_id, arn, policy_hash(text)) for arn, text in changed],
        )
        self._write_evidence(snapshot_id, ((key_subject(arn), text) for arn, text in scope.key_evidence))
        if attempted is None:
            attempted = self._last_attempt(snapshot_id, scope.account, scope.region)
        row: Row = (scope.account, scope.region, 1, scope.error, scope.error_code, n_keys, digest, read_at, attempted)
        return row, state, before

    def _last_attempt(self, snapshot_id: int, account: str, region: str) -> float | None:
        row = self.db.conn.execute(
            "SELECT coalesce(s.attempted_at, n.finished_at) FROM scopes s JOIN snapshots n ON n.id = s.snapshot_id"
            " WHERE s.account = ? AND s.region = ? AND s.snapshot_id < ? ORDER BY s.snapshot_id DESC LIMIT 1",
            [account, region, snapshot_id],
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def _carried(self, result: ScanResult, previous: Mapping[Scope, Row], named: set[Scope]) -> list[Row]:
        """The scopes of the snapshot before that this result does not name, as this snapshot
        holds them: unchanged for a re-read (which reads only the scopes it names); failed, not
        scanned, when the organization's discovery failed (its members were not listed)."""
        rest = [row for where, row in sorted(previous.items()) if where not in named]
        if _rereads(result):
            return rest
        if any(s.account == ORGANIZATION and not s.ok for s in result.scopes):
            reason = "not scanned: organization discovery failed"
            return [
                (a, r, 0, reason, "organization", 0, None, None, attempted)
                for a, r, _, _, _, _, _, _, attempted in rest
                if a != ORGANIZATION
            ]
        return []

    def _totals(
        self,
        snapshot_id: int,
        result: ScanResult,
        shown: Mapping[Scope, tuple[int, int]],
        shown_before: Mapping[Scope, tuple[int, int]],
        carried: list[Row],
    ) -> tuple[int, int]:
        """The snapshot's keys and findings: those of the state each scope shows (a failed one, its
        last good state), as `findings` lists them. A re-read changes the totals of the snapshot
        before by the scopes it read (an event costs the scopes it touches, not the estate)."""
        if _rereads(result):
            row = self.db.conn.execute(
                "SELECT keys, findings FROM snapshots WHERE id = (SELECT max(id) FROM snapshots WHERE id < ?)",
                [snapshot_id],
            ).fetchone()
            keys, findings = (int(row[0]), int(row[1])) if row else (0, 0)
            for where, (k, f) in shown.items():
                old_k, old_f = shown_before.get(where, (0, 0))
                keys, findings = keys + k - old_k, findings + f - old_f
            return keys, findings
        totals = [*shown.values(), *(_counts(self.last_good_state(r[0], r[1])) for r in carried)]
        return sum(k for k, _ in totals), sum(f for _, f in totals)

    def _write_events(
        self,
        snapshot_id: int,
        result: ScanResult,
        events: list[DriftEvent],
        baseline: list[DriftEvent],
        now: float,
        route: Callable[[DriftEvent], Iterable[str]] | None,
        count: Callable[[ScanResult, list[DriftEvent]], CounterIncrements] | None,
        route_baseline: Callable[[DriftEvent], Iterable[str]] | None,
    ) -> None:
        """The drift, the counters and the outbox of the snapshot, in its transaction."""
        sql = self.db.conn
        sql.executemany(
            "INSERT OR IGNORE INTO drift (id, snapshot_id, kind, key_arn, principal, account, region, severity,"
            " detected_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.id,
                    e.snapshot_id,
                    e.kind,
                    e.key_arn,
                    e.principal,
                    e.account,
                    e.region,
                    e.severity,
                    e.detected_at,
                    json.dumps(e.to_dict()),
                )
                for e in events
            ],
        )
        if count is not None:
            sql.executemany(
                "INSERT INTO counters (name, labels, value) VALUES (?, ?, ?)"
                " ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value",
                [(name, json.dumps(labels), value) for name, labels, value in count(result, events) if value],
            )
        outbox: list[tuple[DriftEvent, str, dict[str, Any]]] = [
            (e, sink, e.to_dict()) for e in events for sink in (route(e) if route else ())
        ]
        if route_baseline is not None:
            outbox += [(e, sink, {**e.to_dict(), "baseline": True}) for e in baseline for sink in route_baseline(e)]
        # Alerts are enqueued with the snapshot, or not at all.
        sql.executemany(
            "INSERT OR IGNORE INTO outbox (event_id, sink, snapshot_id, payload, created_at, attempts,"
            " next_attempt_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
            [(e.id, sink, snapshot_id, json.dumps(payload), now, now) for e, sink, payload in outbox],
        )
