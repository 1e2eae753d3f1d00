"""The durable outbox of alerts and exports (kmsaudit/delivery/alerts.py and kmsaudit/delivery/securityhub.py send
from it): what is due, what was delivered or failed, and what an export must send of a snapshot.
A part of Store (kmsaudit/store/database.py), in its own file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlite_utils

from kmsaudit.store.migrations import _pack, _unpack


class Outbox:
    """Store's outbox methods; Store provides the database and its transactions."""

    db: sqlite_utils.Database

    def _transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # Store's

    def due_alerts(self, now: float, limit: int = 500, sink: str | None = None) -> list[dict[str, Any]]:
        """Up to `limit` due alerts per sink (or of one sink), oldest first (one sink's backlog
        never hides another's)."""
        rows = self.db.execute(
            "SELECT event_id, sink, payload, attempts FROM (SELECT *, row_number() OVER"
            " (PARTITION BY sink ORDER BY created_at, event_id) AS n FROM outbox"
            " WHERE delivered_at IS NULL AND next_attempt_at <= ? AND (? IS NULL OR sink = ?))"
            " WHERE n <= ? ORDER BY created_at, event_id",
            [now, sink, sink, limit],
        ).fetchall()
        return [{"event_id": r[0], "sink": r[1], "event": json.loads(r[2]), "attempts": r[3]} for r in rows]

    def pending_alerts(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0])

    def mark_delivered(self, event_id: str, sink: str, at: float) -> None:
        with self._transaction():
            self.db.conn.execute(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL"
                " WHERE event_id = ? AND sink = ?",
                [at, event_id, sink],
            )

    def mark_delivered_many(self, event_ids: Iterable[str], sink: str, at: float) -> None:
        """A batch delivered (an export's 100 findings): one transaction."""
        with self._transaction():
            self.db.conn.executemany(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL"
                " WHERE event_id = ? AND sink = ?",
                [(at, event_id, sink) for event_id in event_ids],
            )

    def mark_failed_many(self, failures: Iterable[tuple[str, str, float]], sink: str) -> None:
        """(event id, error, retry at) of a batch: one transaction."""
        with self._transaction():
            self.db.conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                " WHERE event_id = ? AND sink = ?",
                [(error[:500], retry_at, event_id, sink) for event_id, error, retry_at in failures],
            )

    def queue_export(
        self, sink: str, findings: Sequence[Mapping[str, Any]], now: float, resend_after: float = 86_400.0
    ) -> tuple[int, int]:
        """Queue what an export must send of a snapshot's findings, in one transaction; returns
        (active, archived) queued. A new or changed finding is queued at once; an unchanged one
        again only after `resend_after` (Security Hub keeps a finding 90 days after its last
        update); one that is gone once, archived. A newer state replaces one still waiting."""
        known = {
            row[0]: (row[1], row[2], row[3], bool(row[4]))
            for row in self.db.execute(
                "SELECT finding_id, digest, first_at, queued_at, archived FROM exported WHERE sink = ?", [sink]
            )
        }
        queue: list[tuple[str, dict[str, Any]]] = []
        rows: list[tuple[Any, ...]] = []
        current: set[str] = set()
        for finding in findings:
            finding_id = str(finding["id"])
            current.add(finding_id)
            digest = hashlib.sha256(json.dumps(finding, sort_keys=True).encode()).hexdigest()[:32]
            was = known.get(finding_id)
            if was is not None and was[0] == digest and not was[3] and now - was[2] < resend_after:
                continue
            first_at = was[1] if was is not None and not was[3] else now
            queue.append((finding_id, {"state": "ACTIVE", "finding": dict(finding), "first_at": first_at, "at": now}))
            rows.append((sink, finding_id, digest, first_at, now, 0, _pack(json.dumps(finding))))
        gone = [fid for fid, (_, _, _, archived) in known.items() if not archived and fid not in current]
        if gone:
            wanted = set(gone)
            bodies = {
                r[0]: (json.loads(_unpack(r[1])), r[2])
                for r in self.db.execute(
                    "SELECT finding_id, body, first_at FROM exported WHERE sink = ? AND archived = 0", [sink]
                )
                if r[0] in wanted
            }
            for fid in gone:
                body, first_at = bodies[fid]
                queue.append((fid, {"state": "ARCHIVED", "finding": body, "first_at": first_at, "at": now}))
        with self._transaction():
            sql = self.db.conn
            sql.executemany(
                "DELETE FROM outbox WHERE sink = ? AND subject = ? AND delivered_at IS NULL",
                [(sink, fid) for fid, _ in queue],
            )
            sql.executemany(
                "INSERT OR REPLACE INTO outbox (event_id, sink, subject, snapshot_id, payload, created_at, attempts,"
                " next_attempt_at) VALUES (?, ?, ?, NULL, ?, ?, 0, ?)",
                [(f"{fid}@{now:.6f}", sink, fid, json.dumps(payload), now, now) for fid, payload in queue],
            )
            sql.executemany(
                "INSERT OR REPLACE INTO exported (sink, finding_id, digest, first_at, queued_at, archived, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            sql.executemany(
                "UPDATE exported SET archived = 1, queued_at = ? WHERE sink = ? AND finding_id = ?",
                [(now, sink, fid) for fid in gone],
            )
        return len(queue) - len(gone), len(gone)

    def mark_failed(self, event_id: str, sink: str, error: str, retry_at: float) -> None:
        with self._transaction():
            self.db.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                " WHERE event_id = ? AND sink = ?",
                [error[:500], retry_at, event_id, sink],
            )
