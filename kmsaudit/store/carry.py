"""What a snapshot carries over from the one before it: the acceptance changes of its findings,
the scopes an organization's failed discovery left unscanned, and the scopes an event's re-read
did not touch. Called inside Store.save_scan's transaction; a part of Store (kmsaudit/store/database.py),
in its own file."""

from __future__ import annotations

import sqlite_utils

from kmsaudit.drift import ScopeState
from kmsaudit.model import ORGANIZATION, ScanResult
from kmsaudit.store.migrations import _unpack


class Carry:
    """Store's carrying-over methods; Store provides the database."""

    db: sqlite_utils.Database

    def _record_acceptances(self, snapshot_id: int, before: ScopeState | None, after: ScopeState, now: float) -> None:
        """A row per finding whose acceptance changed: accepted (by which entry), lapsed (the
        entry expired or went away) or outgrown (the access went beyond it)."""
        rows = []
        for where in set(after.findings) | set(before.findings if before else {}):
            old = before.findings.get(where, {}) if before else {}
            new = after.findings.get(where, {})
            was, now_by = old.get("accepted_by"), new.get("accepted_by")
            if now_by and now_by != was:
                rows.append((where, now_by, "accepted"))
            elif was and not now_by:
                rows.append((where, new.get("outgrew") or was, "outgrown" if new.get("outgrew") else "lapsed"))
        self.db.conn.executemany(
            "INSERT INTO acceptances (snapshot_id, key_arn, principal, access, entry_id, change, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(snapshot_id, w[0], w[1], w[2], entry, change, now) for w, entry, change in sorted(rows)],
        )

    def _carry_unscanned(self, snapshot_id: int, result: ScanResult) -> None:
        """Organization discovery failed: the member scopes it would have listed were not scanned.
        They stay in the snapshot as failed, so `findings` and the metrics keep their last good
        state (a failure must never read as access removed)."""
        scanned = {(s.account, s.region) for s in result.scopes}
        previous = self.db.conn.execute(
            "SELECT account, region FROM scopes WHERE snapshot_id = (SELECT max(id) FROM snapshots WHERE id < ?)"
            " AND account <> ?",
            [snapshot_id, ORGANIZATION],
        ).fetchall()
        self.db.conn.executemany(
            "INSERT INTO scopes (snapshot_id, account, region, ok, error, error_code, keys, state)"
            " VALUES (?, ?, ?, 0, 'not scanned: organization discovery failed', 'organization', 0, NULL)",
            [(snapshot_id, account, region) for account, region in previous if (account, region) not in scanned],
        )

    def _carry_unchanged(self, snapshot_id: int, result: ScanResult) -> None:
        """A re-read of some keys (README "Real-time detection"): every scope it did not touch is
        in the new snapshot as it was in the previous one, and the snapshot's totals are the
        previous ones with the touched scopes' counts replaced (their states alone are read: an
        event costs the scopes it touches, not the estate)."""
        sql = self.db.conn
        row = sql.execute(
            "SELECT id, keys, findings, complete FROM snapshots"
            " WHERE id = (SELECT max(id) FROM snapshots WHERE id < ?)",
            [snapshot_id],
        ).fetchone()
        if row is None:
            return
        previous, keys, findings, complete = row
        touched = {(s.account, s.region) for s in result.scopes}
        before = {
            (r[0], r[1]): r[2:]
            for r in sql.execute(
                "SELECT account, region, ok, error, error_code, keys, state FROM scopes WHERE snapshot_id = ?",
                [previous],
            )
        }
        sql.executemany(
            "INSERT INTO scopes (snapshot_id, account, region, ok, error, error_code, keys, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(snapshot_id, *where, *rest) for where, rest in before.items() if where not in touched],
        )
        now = {
            (r[0], r[1]): (r[2], r[3])
            for r in sql.execute("SELECT account, region, ok, state FROM scopes WHERE snapshot_id = ?", [snapshot_id])
            if (r[0], r[1]) in touched
        }

        def counts(digest: str) -> tuple[int, int]:
            body = sql.execute("SELECT body FROM states WHERE digest = ?", [digest]).fetchone()
            state = ScopeState.from_json(_unpack(body[0])) if body else None
            return (len(state.keys), len(state.findings)) if state else (0, 0)

        for where in touched:
            if where in before and before[where][0] and before[where][4]:
                k, f = counts(before[where][4])
                keys, findings = keys - k, findings - f
            if where in now and now[where][0] and now[where][1]:
                k, f = counts(now[where][1])
                keys, findings = keys + k, findings + f
        complete = int(bool(complete) and not result.failed_scopes)
        sql.execute(
            "UPDATE snapshots SET keys = ?, findings = ?, complete = ? WHERE id = ?",
            [keys, findings, complete, snapshot_id],
        )
