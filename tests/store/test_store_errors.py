"""Issue #25 item 6: store errors told apart, each one line with its fix: a full disk, a corrupt
file, a file that is not an SQLite database, another program's SQLite database, a missing folder.
A full disk and a corrupt file both read "not a kmsaudit snapshot database"."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from synthetic import scan

from kmsaudit.errors import StoreError, StoreUnusable
from kmsaudit.store import database
from kmsaudit.store.database import Store

REAL_DATABASE = sqlite_utils.Database


def _full(path: Path) -> sqlite_utils.Database:
    """A real SQLite connection whose database can grow by no page: what a full disk gives."""
    db = REAL_DATABASE(sqlite3.connect(path))
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
    return db


def test_a_full_disk_at_open_is_not_called_a_foreign_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database.sqlite_utils, "Database", _full)
    with pytest.raises(StoreUnusable) as caught:
        Store(tmp_path / "k.db")
    text = str(caught.value)
    assert "not a kmsaudit" not in text and "\n" not in text
    assert "the disk is full" in text and "database is intact" in text and "free space" in text


def test_a_full_disk_while_saving_a_scan_says_so(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError, match=r"the disk is full .*nothing was written and the database is intact"):
        store.save_scan(scan(300))
    store.close()


def test_a_corrupt_file_is_told_apart_with_its_fix(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    store = Store(path)
    store.save_scan(scan(200))
    store.close()
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xab" * (len(data) - 4096)  # the header page intact, the rest garbage
    path.write_bytes(bytes(data))
    with pytest.raises(StoreUnusable) as caught:
        Store(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: the database file is corrupt") and "not a kmsaudit" not in text
    assert "restore it from a backup" in text and ".recover" in text


def test_not_sqlite_and_not_ours_are_two_messages(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_bytes(b"just some notes, " * 100)
    with pytest.raises(StoreUnusable, match=r"not an SQLite database \(another program's file\?\)"):
        Store(other)
    assert other.read_bytes() == b"just some notes, " * 100  # untouched
    foreign = tmp_path / "app.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreUnusable, match=r"an SQLite database, but not kmsaudit's .*new file name"):
        Store(foreign)


def test_a_missing_folder_is_its_own_message(tmp_path: Path) -> None:
    with pytest.raises(StoreUnusable, match=r"no folder .*: create it \(mkdir -p .*\) or fix \[store\] path"):
        Store(tmp_path / "typo" / "k.db")
