"""What a snapshot records of its findings' acceptance, against the state before: accepted (by
which entry), lapsed, or outgrown. Called inside Store.save_scan's transaction
(kmsaudit/store/write.py); a part of Store (kmsaudit/store/database.py), in its own file."""

from __future__ import annotations

import sqlite_utils

from kmsaudit.drift import ScopeState


class Carry:
    """Store's acceptance records; Store provides the database."""

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
