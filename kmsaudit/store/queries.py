"""What is read back from the snapshot database: the last good state of a scope, a snapshot's
scopes and findings, drift, policy history and acceptance history, and what a scan needs to
know of the last one. A part of Store (kmsaudit/store/database.py), in its own file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from kmsaudit.drift import ScopeState
from kmsaudit.errors import SnapshotNotFound
from kmsaudit.store.migrations import _unpack


@dataclass(frozen=True, slots=True)
class ScopeView:
    account: str
    region: str
    ok: bool  # read in this snapshot
    error_code: str
    last_good_at: float | None  # when its state was last read completely (None: never)
    state: ScopeState | None  # that state
    last_attempt_at: float | None = None  # when a scan last tried to read it (a re-read is no scan)


class Queries:
    """Store's reading methods; Store provides the database."""

    db: sqlite_utils.Database
    path: Path

    def last_good_state(self, account: str, region: str) -> ScopeState | None:
        """The scope's state of the last snapshot that read it completely, in the order snapshots
        were committed (their id): one writer at a time (the writer lock, the daemon's one
        writing lock) makes that the order they were collected in, and a wall clock stepped back
        cannot make an older snapshot look newer. Retention keeps the same one."""
        row = self.db.execute(
            "SELECT states.body FROM scopes JOIN states ON states.digest = scopes.state "
            "JOIN snapshots ON snapshots.id = scopes.snapshot_id "
            "WHERE account = ? AND region = ? AND ok = 1 ORDER BY snapshot_id DESC LIMIT 1",
            [account, region],
        ).fetchone()
        return ScopeState.from_json(_unpack(row[0])) if row else None

    def acceptance_seen(self) -> dict[str, tuple[float, float | None]]:
        """Entry id -> (first configured, last accepted a finding) (for acceptance-unused)."""
        rows = self.db.execute("SELECT entry_id, first_seen_at, last_matched_at FROM acceptance_entries").fetchall()
        return {entry: (first, last) for entry, first, last in rows}

    def acceptance_history(self, key_arn: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT snapshot_id, principal, access, entry_id, change, at FROM acceptances WHERE key_arn = ?"
            " ORDER BY snapshot_id, principal, access",
            [key_arn],
        ).fetchall()
        names = ("snapshot_id", "principal", "access", "entry_id", "change", "at")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def event_scopes(self) -> dict[tuple[str, str], bool]:
        """The scopes of the latest snapshot (every configured scope, SPEC §5), each with whether
        it is read well now, so that an event may re-read some of its keys (README "Real-time
        detection"); a scope failing in the latest snapshot, or never read whole, is re-read whole
        (a one-key read must not make a failed scope look read). One query, no state read."""
        rows = self.db.execute(
            "SELECT s.account, s.region, s.ok = 1 AND EXISTS (SELECT 1 FROM scopes g WHERE g.account = s.account "
            "AND g.region = s.region AND g.ok = 1) FROM scopes s WHERE s.snapshot_id = (SELECT max(id) FROM snapshots)"
        ).fetchall()
        return {(str(a), str(r)): bool(good) for a, r, good in rows}

    def known_policies(self, scopes: Iterable[tuple[str, str]] | None = None) -> dict[str, str]:
        """Key ARN -> policy hash, in every scope's last good state (or these scopes' only): a
        scan keeps the text of a policy only when its hash is not this (issue #19: memory)."""
        if scopes is not None:
            known_in: dict[str, str] = {}
            for account, region in scopes:
                state = self.last_good_state(account, region)
                known_in.update(state.keys if state else {})
            return known_in
        known: dict[str, str] = {}
        rows = self.db.execute(
            "SELECT st.body FROM states st WHERE st.digest IN (SELECT s.state FROM scopes s WHERE s.ok = 1 AND "
            "s.snapshot_id = (SELECT max(p.snapshot_id) FROM scopes p WHERE p.account = s.account "
            "AND p.region = s.region AND p.ok = 1))"
        ).fetchall()
        for (body,) in rows:
            known.update(ScopeState.from_json(_unpack(body)).keys)
        return known

    def counter_totals(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The cumulative counters: (name, labels) -> value."""
        rows = self.db.execute("SELECT name, labels, value FROM counters").fetchall()
        return {(name, tuple((k, v) for k, v in json.loads(labels))): float(value) for name, labels, value in rows}

    def latest_snapshot(self) -> int | None:
        row = self.db.execute("SELECT max(id) FROM snapshots").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def snapshot(self, snapshot_id: int | None = None) -> dict[str, Any] | None:
        """One snapshot's row (the latest when no id is given), or None if there is none."""
        snapshot_id = snapshot_id if snapshot_id is not None else self.latest_snapshot()
        row = self.db.execute(
            "SELECT id, started_at, finished_at, complete, keys, findings FROM snapshots WHERE id = ?", [snapshot_id]
        ).fetchone()
        names = ("id", "started_at", "finished_at", "complete", "keys", "findings")
        return dict(zip(names, row, strict=True)) if row else None

    def snapshots(self) -> list[dict[str, Any]]:
        """Every stored snapshot, oldest first, with its scopes' outcome."""
        rows = self.db.execute(
            "SELECT s.id, s.started_at, s.finished_at, s.complete, s.keys, s.findings, "
            "(SELECT count(*) FROM scopes p WHERE p.snapshot_id = s.id), "
            "(SELECT count(*) FROM scopes p WHERE p.snapshot_id = s.id AND p.ok = 0) "
            "FROM snapshots s ORDER BY s.id"
        ).fetchall()
        names = ("id", "started_at", "finished_at", "complete", "keys", "findings", "scopes", "failed_scopes")
        return [dict(zip(names, row, strict=True)) | {"complete": bool(row[3])} for row in rows]

    def scope_view(self, snapshot_id: int | None = None) -> list[ScopeView]:
        """Each scope of a snapshot: whether it was read, and its last good state (from an earlier
        snapshot when it failed in this one): what `findings` and the metrics report."""
        snapshot_id = snapshot_id if snapshot_id is not None else self.latest_snapshot()
        if snapshot_id is None:
            return []
        if not self.db.execute("SELECT 1 FROM snapshots WHERE id = ?", [snapshot_id]).fetchone():
            raise SnapshotNotFound(f"no snapshot {snapshot_id} in {self.path} (kmsaudit snapshots lists them)")
        rows = self.db.execute(
            "SELECT x.account, x.region, x.ok, x.error_code, coalesce(g.read_at, n.finished_at), st.body,"
            " coalesce(x.attempted_at, (SELECT finished_at FROM snapshots WHERE id = ?)) FROM ("
            " SELECT s.account, s.region, s.ok, s.error_code, s.attempted_at, (SELECT p.snapshot_id FROM scopes p"
            "  WHERE p.account = s.account AND p.region = s.region AND p.ok = 1 AND p.snapshot_id <= s.snapshot_id"
            "  ORDER BY p.snapshot_id DESC LIMIT 1) AS good FROM scopes s WHERE s.snapshot_id = ?) x "
            "LEFT JOIN scopes g ON g.snapshot_id = x.good AND g.account = x.account AND g.region = x.region "
            "LEFT JOIN states st ON st.digest = g.state LEFT JOIN snapshots n ON n.id = x.good "
            "ORDER BY x.account, x.region",
            [snapshot_id, snapshot_id],
        ).fetchall()
        return [
            ScopeView(
                account,
                region,
                bool(ok),
                error_code or "",
                read_at,
                ScopeState.from_json(_unpack(body)) if body is not None else None,
                attempted_at,
            )
            for account, region, ok, error_code, read_at, body, attempted_at in rows
        ]

    def key_names(self, snapshot_id: int | None = None) -> dict[str, Mapping[str, Any]]:
        """Key ARN -> {"aliases", "manager"} of the keys with an alias or managed by AWS."""
        names: dict[str, Mapping[str, Any]] = {}
        for scope in self.scope_view(snapshot_id):
            if scope.state is not None:
                names.update(scope.state.names)
        return names

    def find_keys(self, text: str) -> list[str]:
        """Key ARNs named by `text`: an ARN, a key id, or an alias (`alias/name`: one key per
        account and region can have it), among the latest snapshot's keys."""
        found: list[str] = []
        for scope in self.scope_view():
            if scope.state is None:
                continue
            for arn in scope.state.keys:
                if text in (arn, arn.rsplit("/", 1)[-1]) or text in scope.state.names.get(arn, {}).get("aliases", ()):
                    found.append(arn)
        return sorted(found)

    def findings(self, snapshot_id: int | None = None) -> list[dict[str, Any]]:
        """Findings of a snapshot; a scope that failed in it shows its last good state."""
        out: list[Mapping[str, Any]] = []
        for scope in self.scope_view(snapshot_id):
            if scope.state is not None:
                out.extend(scope.state.findings.values())
        return [dict(f) for f in out]

    def drift(self, since: float | None = None) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT body FROM drift WHERE detected_at >= ? ORDER BY detected_at, id", [since or 0.0]
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def history(self, key_arn: str) -> list[dict[str, Any]]:
        """The key's policy versions: each distinct text with the first snapshot that saw it."""
        rows = self.db.execute(
            "SELECT kp.snapshot_id, s.finished_at, kp.sha256, p.text FROM policy_versions kp "
            "JOIN snapshots s ON s.id = kp.snapshot_id LEFT JOIN policies p ON p.sha256 = kp.sha256 "
            "WHERE kp.key_arn = ? ORDER BY kp.snapshot_id",
            [key_arn],
        ).fetchall()
        versions: list[dict[str, Any]] = []
        for snapshot_id, finished_at, sha, text in rows:
            if not versions or versions[-1]["sha256"] != sha:
                versions.append({"snapshot_id": snapshot_id, "seen_at": finished_at, "sha256": sha, "text": text})
        return versions
