"""Snapshots in SQLite (sqlite-utils): with its parts kmsaudit/store/migrations.py (the schema),
kmsaudit/store/queries.py (what the read commands, metrics and scans read back), kmsaudit/store/carry.py
(what a snapshot carries over from the one before), kmsaudit/store/retention.py (forgetting old
snapshots) and kmsaudit/store/outbox.py (alerts and exports), the only place with SQL.

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils
import structlog

from kmsaudit.drift import ScopeState, baseline_events, diff_scope, policy_hash, scope_failed
from kmsaudit.errors import StoreBusy, StoreError, StoreUnusable
from kmsaudit.model import ORGANIZATION, DriftEvent, ScanResult
from kmsaudit.store.carry import Carry
from kmsaudit.store.failures import describe, not_ours
from kmsaudit.store.migrations import MIGRATIONS, SCHEMA_VERSION, _pack
from kmsaudit.store.outbox import Outbox
from kmsaudit.store.queries import Queries
from kmsaudit.store.retention import Retention

log = structlog.get_logger("kmsaudit.store")

BUSY_TIMEOUT_MS = 10_000
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
    folder = path.parent
    if not folder.is_dir():  # never created: a typo would start a new, un-alerted baseline (issue #25)
        raise StoreUnusable(f"{path}: no folder {folder}: create it (mkdir -p {folder}) or fix [store] path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreUnusable(f"{folder}: not writable by this user, so {path} cannot be created")
    return f"{path}: will be created by the first scan"


class Store(Queries, Carry, Retention, Outbox):
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
        except (sqlite3.Error, OSError) as exc:  # each its own line and fix (store/failures.py)
            raise StoreUnusable(describe(self.path, exc)) from None

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
            if not self.path.parent.is_dir():  # a typo would make a new, un-alerted baseline (issue #25)
                raise StoreUnusable(
                    f"{self.path}: no folder {self.path.parent}: create it (mkdir -p {self.path.parent}) "
                    "or fix [store] path"
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
                raise StoreUnusable(not_ours(self.path))
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
            raise StoreError(describe(self.path, exc, "cannot write the snapshot")) from None

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

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.db.close()
