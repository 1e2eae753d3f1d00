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
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils
import structlog

from kmsaudit.errors import StoreBusy, StoreError, StoreUnusable
from kmsaudit.store.carry import Carry
from kmsaudit.store.evidence import Evidence
from kmsaudit.store.failures import describe, not_ours
from kmsaudit.store.migrations import MIGRATIONS, SCHEMA_VERSION
from kmsaudit.store.outbox import Outbox
from kmsaudit.store.queries import Queries
from kmsaudit.store.retention import Retention
from kmsaudit.store.write import CounterIncrements, Writer

log = structlog.get_logger("kmsaudit.store")

BUSY_TIMEOUT_MS = 10_000
__all__ = ["BUSY_TIMEOUT_MS", "CounterIncrements", "Store", "check_location", "writer_lock"]


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


class Store(Writer, Queries, Carry, Retention, Outbox, Evidence):
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

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.db.close()
