"""Snapshots in SQLite (sqlite-utils): with its parts kmsaudit/migrations.py (the schema) and
kmsaudit/outbox.py (alerts and exports), the only place with SQL.

A snapshot is one scan. Each scope's state (its findings and its keys' policy hashes) is
stored once, compressed, under its digest: an unchanged scope costs one row per scan, and
drift between equal digests is nothing. Key policy texts are stored once per distinct text.
A whole snapshot, with its drift events, is written in one transaction.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
import structlog

from kmsaudit.drift import ScopeState, baseline_events, diff_scope, policy_hash, scope_failed
from kmsaudit.errors import SnapshotNotFound, StoreBusy, StoreError, StoreUnusable
from kmsaudit.migrations import MIGRATIONS, SCHEMA_VERSION, _pack, _unpack
from kmsaudit.model import ORGANIZATION, DriftEvent, ScanResult
from kmsaudit.outbox import Outbox

log = structlog.get_logger("kmsaudit.store")

BUSY_TIMEOUT_MS = 10_000
PRUNE_BATCH = 50  # snapshots forgotten per transaction: short write locks, a small WAL
VACUUM_PAGES = 2_000  # free pages given back to the file system per step
# (metric name, labels, increment): what one scan adds to the cumulative counters
CounterIncrements = Iterable[tuple[str, tuple[tuple[str, str], ...], float]]


@contextmanager
def writer_lock(path: str | Path) -> Iterator[None]:
    """One writer at a time (issue #19): scans that overlap would commit out of order and make
    drift flip. A lock file beside the database, held for a whole scan by `kmsaudit scan`, cron
    and the daemon alike; StoreBusy names the holder. Readers need no lock (SQLite's WAL)."""
    lock = Path(f"{path}.lock")
    try:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreUnusable(f"{lock}: cannot create the writer lock: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 200, 0).decode(errors="replace").strip() or "another process"
            raise StoreBusy(
                f"{path}: another kmsaudit is writing to this database ({holder}); one writer at a time: "
                "let it finish, and do not run the daemon and a scheduled scan on one database"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(
            handle, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC".encode(), 0
        )
        try:
            yield
        finally:
            os.ftruncate(handle, 0)
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


def check_location(path: str | Path) -> str:
    """What `kmsaudit check` says of the store path, without creating or changing anything;
    StoreUnusable when a scan could not use it."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        store = Store(path, create=False, read_only=True)
        try:
            snapshots = store.latest_snapshot() or 0
        finally:
            store.close()
        for where in (path, path.parent):
            if not os.access(where, os.W_OK):
                raise StoreUnusable(f"{where}: not writable by this user")
        return f"{path}: kmsaudit database, {snapshots} snapshots"
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StoreUnusable(f"{ancestor}: is not a directory, so {path} cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise StoreUnusable(f"{ancestor}: not writable by this user, so {path} cannot be created")
    return f"{path}: will be created by the first scan"


@dataclass(frozen=True, slots=True)
class ScopeView:
    account: str
    region: str
    ok: bool  # read in this snapshot
    error_code: str
    last_good_at: float | None  # when its state was last read completely (None: never)
    state: ScopeState | None  # that state


class Store(Outbox):
    """The snapshot database at `path`.

    `create=False` (the read commands): a missing database is an error, not an empty one that
    would read as "no access found". The path must be a regular file (or nothing yet); a file
    that is not kmsaudit's database is refused, and only kmsaudit's own files ever have their
    mode changed.
    """

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        created = self._check_path(create and not read_only)
        if read_only:  # a look (`kmsaudit check`): nothing created, migrated or chmod-ed
            self._is_ours()
            self.db = sqlite_utils.Database(sqlite3.connect(f"file:{self._uri()}?mode=ro", uri=True))
            return
        try:
            if created:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # never world-readable
            ours = created or self._is_ours()
            if ours and not created:
                self._owner_only()  # before SQLite makes its -wal and -shm files with the same mode
            elif not ours:
                self._warn_if_loose()
            self.db = sqlite_utils.Database(self.path)
            if created:  # free pages given back a few at a time after retention (issue #19)
                self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.busy_timeout(BUSY_TIMEOUT_MS)
            self._migrate()
            if created or not ours:  # who made the file decides whose mode it is
                with self.db.conn:
                    self.db.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('created_by_kmsaudit', ?)", ["1" if created else "0"]
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreUnusable(f"{self.path}: not a kmsaudit snapshot database ({exc})") from None
        except (sqlite3.Error, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StoreUnusable(f"{self.path}: cannot open the snapshot database: {reason}") from None

    def _check_path(self, create: bool) -> bool:
        """Whether the database is to be created here; StoreUnusable if the path cannot be one."""
        try:
            info = self.path.stat()  # through a symbolic link: what it points at matters
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise StoreUnusable(f"{self.path}: cannot use as the snapshot database: {exc.strerror or exc}") from None
        hint = "[store] path names the database file, e.g. /var/lib/kmsaudit/kmsaudit.db"
        if info is None:
            if self.path.is_symlink():
                raise StoreUnusable(f"{self.path}: is a symbolic link to nothing; {hint}")
            if not create:
                raise StoreUnusable(
                    f"{self.path}: no snapshot database here yet: run `kmsaudit scan` first, or check [store] path"
                )
            return True
        if stat.S_ISDIR(info.st_mode):
            raise StoreUnusable(f"{self.path}: is a directory; {hint}")
        if not stat.S_ISREG(info.st_mode):
            raise StoreUnusable(f"{self.path}: is not a regular file (a device, a pipe or a socket); {hint}")
        return False

    def _is_ours(self) -> bool:
        """An existing file: kmsaudit's database (its `meta` table), or an empty file. Anything
        else is somebody else's and is refused before it is touched."""
        # With no WAL, an immutable look creates no -wal/-shm file (which SQLite would give the
        # database's mode, loose or not); with one (a crash left it), its pages must be read too.
        mode = "mode=ro" if Path(f"{self.path}-wal").exists() else "immutable=1"
        look = sqlite3.connect(f"file:{self._uri()}?{mode}", uri=True)
        try:
            tables = {r[0] for r in look.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
            if not tables:
                return False  # an empty file: usable, but not ours to chmod
            if "meta" not in tables:
                raise StoreUnusable(f"{self.path}: an SQLite database, but not kmsaudit's (no schema version)")
            row = look.execute("SELECT value FROM meta WHERE key = 'created_by_kmsaudit'").fetchone()
        finally:
            look.close()
        return row is None or row[0] == "1"  # databases of earlier releases were always created by kmsaudit

    def busy_timeout(self, milliseconds: int) -> None:
        """How long a statement waits for another writer's lock before failing."""
        self.db.execute(f"PRAGMA busy_timeout={int(milliseconds)}")

    def _uri(self) -> str:
        return urllib.parse.quote(str(self.path.absolute()))

    def _warn_if_loose(self) -> None:
        info = self.path.stat()
        if info.st_mode & 0o077:
            log.warning("store.permissions_loose", path=str(self.path), mode=oct(info.st_mode & 0o777))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with self.db.conn:
                yield
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: made by a newer kmsaudit (schema {version} > {SCHEMA_VERSION})")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.db.conn:
                MIGRATIONS[target](self.db)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(target)])

    def _owner_only(self) -> None:
        """A database (or its WAL) left readable by others is closed up: it holds every key
        policy of the estate. SQLite gives the WAL and shared-memory files the database's mode."""
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            if info.st_mode & 0o077 and info.st_uid == os.getuid():
                os.chmod(path, 0o600)
                log.warning("store.permissions_tightened", path=str(path), mode=oct(info.st_mode & 0o777))

    # -- writing ---------------------------------------------------------------------------
    def last_good_state(self, account: str, region: str) -> ScopeState | None:
        """The scope's state of the most recent collection that read it completely (by when it
        was collected, not when it was committed: issue #19)."""
        row = self.db.execute(
            "SELECT states.body FROM scopes JOIN states ON states.digest = scopes.state "
            "JOIN snapshots ON snapshots.id = scopes.snapshot_id "
            "WHERE account = ? AND region = ? AND ok = 1 ORDER BY snapshots.started_at DESC, snapshot_id DESC LIMIT 1",
            [account, region],
        ).fetchone()
        return ScopeState.from_json(_unpack(row[0])) if row else None

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
        by_scope: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for finding in result.findings:
            by_scope.setdefault((finding.key_account, finding.region), []).append(finding.to_dict())
        events: list[DriftEvent] = []
        baseline: list[DriftEvent] = []
        sql = self.db.conn
        with self._transaction():
            cursor = sql.execute(
                "INSERT INTO snapshots (started_at, finished_at, complete, keys, findings, requests, throttled, lints)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    result.started_at,
                    result.finished_at,
                    int(not result.failed_scopes and not result.iam_failures),
                    result.keys,
                    len(result.findings),
                    result.requests,
                    result.throttled,
                    _pack(json.dumps([lint.to_dict() for lint in result.lints])),
                ],
            )
            snapshot_id = int(cursor.lastrowid or 0)
            for scope in result.scopes:
                digest = None
                n_keys = scope.keys
                if scope.ok:
                    before = self.last_good_state(scope.account, scope.region)
                    state = ScopeState.build(
                        by_scope.get((scope.account, scope.region), []),
                        scope.key_policies,
                        scope.key_names,
                        scope.unreadable,
                        scope.key_hashes,
                    ).carry(before, result.iam_failures)
                    if scope.partial is not None and before is not None:
                        state = before.replacing(scope.partial, state)  # the rest keeps its state
                        n_keys = len(state.keys)
                    digest = state.digest()
                    self._record_acceptances(snapshot_id, before, state, now)
                    events += diff_scope(
                        scope.account, scope.region, before, state, snapshot_id=snapshot_id, detected_at=now
                    )
                    if before is None and route_baseline is not None:
                        baseline += baseline_events(scope.account, scope.region, state, snapshot_id, now)
                    sql.execute(
                        "INSERT OR IGNORE INTO states (digest, body) VALUES (?, ?)", [digest, _pack(state.to_json())]
                    )
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
                else:
                    events.append(
                        scope_failed(
                            scope.account,
                            scope.region,
                            scope.error,
                            scope.error_code,
                            snapshot_id=snapshot_id,
                            detected_at=now,
                        )
                    )
                sql.execute(
                    "INSERT INTO scopes (snapshot_id, account, region, ok, error, error_code, keys, state)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        snapshot_id,
                        scope.account,
                        scope.region,
                        int(scope.ok),
                        scope.error,
                        scope.error_code,
                        n_keys,
                        digest,
                    ],
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
            if any(scope.account == ORGANIZATION and not scope.ok for scope in result.scopes):
                self._carry_unscanned(snapshot_id, result)
            if any(scope.partial is not None for scope in result.scopes):
                self._carry_unchanged(snapshot_id, result)
            for account, reason in sorted(result.iam_failures.items()):
                events.append(scope_failed(account, "global", reason, "iam", snapshot_id=snapshot_id, detected_at=now))
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
            outbox = [(e, sink, e.to_dict()) for e in events for sink in (route(e) if route else ())]
            outbox += (
                [(e, sink, {**e.to_dict(), "baseline": True}) for e in baseline for sink in route_baseline(e)]
                if route_baseline is not None
                else []
            )
            # Alerts are enqueued with the snapshot, or not at all.
            sql.executemany(
                "INSERT OR IGNORE INTO outbox (event_id, sink, snapshot_id, payload, created_at, attempts,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
                [(e.id, sink, snapshot_id, json.dumps(payload), now, now) for e, sink, payload in outbox],
            )
        return snapshot_id, events

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

    def event_scopes(self) -> set[tuple[str, str]]:
        """The scopes an event may re-read keys of: those of the latest snapshot with a good
        state to change (README "Real-time detection"); one query, no state read."""
        rows = self.db.execute(
            "SELECT s.account, s.region FROM scopes s WHERE s.snapshot_id = (SELECT max(id) FROM snapshots) "
            "AND EXISTS (SELECT 1 FROM scopes g WHERE g.account = s.account AND g.region = s.region AND g.ok = 1)"
        ).fetchall()
        return {(str(a), str(r)) for a, r in rows}

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

    # -- reading ---------------------------------------------------------------------------
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
            "SELECT x.account, x.region, x.ok, x.error_code, n.finished_at, st.body FROM ("
            " SELECT s.account, s.region, s.ok, s.error_code, (SELECT p.snapshot_id FROM scopes p"
            "  WHERE p.account = s.account AND p.region = s.region AND p.ok = 1 AND p.snapshot_id <= s.snapshot_id"
            "  ORDER BY p.snapshot_id DESC LIMIT 1) AS good FROM scopes s WHERE s.snapshot_id = ?) x "
            "LEFT JOIN scopes g ON g.snapshot_id = x.good AND g.account = x.account AND g.region = x.region "
            "LEFT JOIN states st ON st.digest = g.state LEFT JOIN snapshots n ON n.id = x.good "
            "ORDER BY x.account, x.region",
            [snapshot_id],
        ).fetchall()
        return [
            ScopeView(
                account,
                region,
                bool(ok),
                error_code or "",
                finished_at,
                ScopeState.from_json(_unpack(body)) if body is not None else None,
            )
            for account, region, ok, error_code, finished_at, body in rows
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
                    self.db.execute(f"DELETE FROM drift WHERE snapshot_id IN ({marks})", ids)
                    self.db.execute(f"DELETE FROM scopes WHERE snapshot_id IN ({marks})", ids)
                    self.db.execute(
                        f"DELETE FROM policy_versions WHERE snapshot_id IN ({marks}) AND snapshot_id < "
                        "(SELECT max(v.snapshot_id) FROM policy_versions v WHERE v.key_arn = policy_versions.key_arn)",
                        ids,
                    )
                    self.db.execute(f"DELETE FROM snapshots WHERE id IN ({marks})", ids)
            with self._transaction():
                self.db.execute("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?", [cutoff])
                self.db.execute(
                    "DELETE FROM states WHERE digest NOT IN (SELECT state FROM scopes WHERE state IS NOT NULL)"
                )
                self.db.execute("DELETE FROM policies WHERE sha256 NOT IN (SELECT sha256 FROM policy_versions)")
            self._give_space_back()  # also what an interrupted prune left to give back
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: retention stopped: {exc}") from None
        return len(old)

    def _give_space_back(self) -> None:
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # INCREMENTAL
            while self.db.execute("PRAGMA freelist_count").fetchone()[0]:
                self.db.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
        # Databases of earlier releases reuse their free pages instead: bounded, not shrunk.
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.db.close()
