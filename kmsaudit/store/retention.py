"""Retention: forgetting snapshots older than `store.retention_days`, in small transactions, and
giving their space back. A part of Store (kmsaudit/store/database.py), in its own file."""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

import sqlite_utils

from kmsaudit.errors import StoreError
from kmsaudit.store.failures import describe

PRUNE_BATCH = 50  # snapshots forgotten per transaction: short write locks, a small WAL
VACUUM_PAGES = 2_000  # free pages given back to the file system per step
# The history rows of a pruned snapshot, deleted with it (scopes and policy versions: below).
_NAMING_SNAPSHOTS = ("drift", "acceptances")


class Retention:
    """Store's retention methods; Store provides the database and its transactions."""

    db: sqlite_utils.Database
    path: Path

    def _transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # Store's

    def prune(self, retention_days: float, now: float | None = None) -> int:
        """Forget snapshots older than the retention, and give the space back; returns how many.

        Kept whatever their age: the last complete state of every scope (drift compares with it)
        and the latest policy version of every key (history starts from it).

        In small transactions (a few snapshots each), then free pages are given back step by step
        (`incremental_vacuum`, where the database allows it) and the WAL truncated: never a full
        VACUUM, which copies the whole database into the WAL (twice the disk) and holds the lock
        for its whole length. Any failure (disk full, a lock held too long) is a StoreError: the
        next prune starts over where this one stopped (issue #19)."""
        cutoff = (now if now is not None else time.time()) - retention_days * 86400
        try:
            keep = "SELECT max(snapshot_id) FROM scopes WHERE ok = 1 GROUP BY account, region"
            old = [
                r[0]
                for r in self.db.execute(
                    f"SELECT id FROM snapshots WHERE finished_at < ? AND id NOT IN ({keep}) "
                    "AND id <> (SELECT max(id) FROM snapshots)",
                    [cutoff],
                ).fetchall()
            ]
            for chunk in range(0, len(old), PRUNE_BATCH):
                ids = old[chunk : chunk + PRUNE_BATCH]
                marks = ",".join("?" * len(ids))
                with self._transaction():
                    # Every table that names a snapshot (issue #24, defect 5: `acceptances` was
                    # left, its foreign key failed every prune after an acceptance changed).
                    for table in _NAMING_SNAPSHOTS:
                        self.db.execute(f"DELETE FROM {table} WHERE snapshot_id IN ({marks})", ids)
                    self.db.execute(f"DELETE FROM scopes WHERE snapshot_id IN ({marks})", ids)
                    self.db.execute(f"DELETE FROM snapshots WHERE id IN ({marks})", ids)
                    for table, subject in (("policy_versions", "key_arn"), ("evidence_versions", "subject")):
                        self._carry_versions(table, subject, ids)
            with self._transaction():
                self.db.execute("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?", [cutoff])
                self.db.execute(
                    "DELETE FROM states WHERE digest NOT IN (SELECT state FROM scopes WHERE state IS NOT NULL)"
                )
                self.db.execute("DELETE FROM policies WHERE sha256 NOT IN (SELECT sha256 FROM policy_versions)")
                self.db.execute("DELETE FROM evidence WHERE sha256 NOT IN (SELECT sha256 FROM evidence_versions)")
            self._give_space_back()  # also what an interrupted prune left to give back
        except sqlite3.Error as exc:
            raise StoreError(describe(self.path, exc, "retention stopped")) from None
        return len(old)

    def _carry_versions(self, table: str, subject: str, pruned: list[int]) -> None:
        """A version row of a pruned snapshot still stands for the snapshots after it until the
        subject's next version (a kept snapshot reads "the latest version at or before me"): it
        moves to the next kept snapshot when no newer version comes first, else it goes."""
        marks = ",".join("?" * len(pruned))
        rows = self.db.execute(f"SELECT {subject}, snapshot_id FROM {table} WHERE snapshot_id IN ({marks})", pruned)
        for name, at in rows.fetchall():
            nxt = self.db.execute("SELECT min(id) FROM snapshots WHERE id > ?", [at]).fetchone()[0]
            newer = (
                nxt is None
                or self.db.execute(
                    f"SELECT 1 FROM {table} WHERE {subject} = ? AND snapshot_id > ? AND snapshot_id <= ?",
                    [name, at, nxt],
                ).fetchone()
            )
            if newer and nxt is not None:
                self.db.execute(f"DELETE FROM {table} WHERE {subject} = ? AND snapshot_id = ?", [name, at])
            elif nxt is not None:
                self.db.execute(
                    f"UPDATE {table} SET snapshot_id = ? WHERE {subject} = ? AND snapshot_id = ?", [nxt, name, at]
                )
            # no snapshot after it (none kept later): the row stays, the subject's latest version

    def _give_space_back(self) -> None:
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # INCREMENTAL
            while self.db.execute("PRAGMA freelist_count").fetchone()[0]:
                self.db.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
        # Databases of earlier releases reuse their free pages instead: bounded, not shrunk.
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
