"""The snapshot store on a real SQLite file: retention, growth, and SIGKILL mid-write."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kmsaudit.model import Finding, ScanResult, ScopeStatus
from kmsaudit.store import Store

ACCOUNT = "111122223333"


def scan(n_keys: int, *, extra_principal: str = "", finished_at: float = 0.0, ok: bool = True) -> ScanResult:
    findings = []
    policies = []
    for i in range(n_keys):
        arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{i:08d}"
        policies.append((arn, json.dumps({"Statement": [{"Sid": str(i)}]})))
        for principal in ("arn:aws:iam::444455556666:root", *([extra_principal] if extra_principal else [])):
            findings.append(
                Finding(
                    arn,
                    ACCOUNT,
                    "us-east-1",
                    principal,
                    principal.split(":")[4],
                    "potential",
                    "external",
                    ("key-policy",),
                    ("kms:Decrypt",),
                    False,
                    (),
                    "high",
                )
            )
    scope = ScopeStatus(
        ACCOUNT,
        "us-east-1",
        ok,
        n_keys if ok else 0,
        "" if ok else "boom",
        "" if ok else "x",
        tuple(policies) if ok else (),
    )
    return ScanResult(
        tuple(findings) if ok else (),
        (),
        (scope,),
        started_at=finished_at - 1,
        finished_at=finished_at or time.time(),
        keys=n_keys,
    )


def test_retention_forgets_old_snapshots_but_never_the_last_good_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    day = 86400.0
    now = 1_800_000_000.0
    store.save_scan(scan(50, finished_at=now - 200 * day), detected_at=now - 200 * day)
    store.save_scan(scan(50, extra_principal="arn:aws:iam::777788889999:root", finished_at=now - 150 * day))
    store.save_scan(scan(50, ok=False, finished_at=now - 100 * day))  # failing ever since
    store.save_scan(scan(50, ok=False, finished_at=now - 1 * day))
    assert store.prune(90, now=now) == 2  # snapshot 2 is the scope's last good state: kept
    assert [r[0] for r in store.db.execute("SELECT id FROM snapshots ORDER BY id")] == [2, 4]
    assert len(store.findings()) == 100  # the last good state still answers for the failing scope
    _, events = store.save_scan(scan(50, finished_at=now))
    assert {e.kind for e in events} == {"removed"}  # compared with the kept state, not with nothing
    assert store.integrity() == "ok"


def test_an_unchanged_estate_grows_the_database_by_little(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    result = scan(2000)
    store.save_scan(result)
    size = os.path.getsize(store.path) + os.path.getsize(str(store.path) + "-wal")
    for _ in range(20):
        store.save_scan(result)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    grown = os.path.getsize(store.path) - size
    assert grown < 100_000, grown  # 20 scans of 2,000 unchanged keys: rows, not copies


WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from test_store import scan
from kmsaudit.store import Store
store = Store(sys.argv[1])
store.save_scan(scan(10))
print("ready", flush=True)
i = 0
while True:
    i += 1
    store.save_scan(scan(3000, extra_principal=f"arn:aws:iam::{i:012d}:root"))
"""


def test_sigkill_while_writing_leaves_a_sound_database(tmp_path: Path) -> None:
    tests = str(Path(__file__).resolve().parent)
    for attempt, delay in enumerate((0.3, 0.9, 1.7)):
        path = tmp_path / f"k{attempt}.db"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), tests], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        store = Store(path)
        # Every snapshot present is whole: a scope row and its state for each.
        for (snapshot_id,) in store.db.execute("SELECT id FROM snapshots").fetchall():
            rows = store.db.execute("SELECT state FROM scopes WHERE snapshot_id = ?", [snapshot_id]).fetchall()
            assert len(rows) == 1 and rows[0][0] is not None
        first = store.findings(1)
        assert len(first) == 10  # the first snapshot is readable


def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite_utils

    from kmsaudit.store import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    MIGRATIONS[1](db)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.conn.commit()
    db.close()
    store = Store(path)
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"
    assert "outbox" in store.db.table_names()
    store.save_scan(scan(3), route=lambda e: ["x"])
    assert store.integrity() == "ok"
