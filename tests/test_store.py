"""The snapshot store on a real SQLite file: retention, growth, migrations (SIGKILL mid-write:
tests/faults/test_crash.py)."""

from __future__ import annotations

import json
import os
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


def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite_utils

    from kmsaudit.store import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    MIGRATIONS[1](db)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.conn.commit()
    db.close()
    store = Store(path)
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert {"outbox", "counters"} <= set(store.db.table_names())
    store.save_scan(scan(3), route=lambda e: ["x"])
    assert store.integrity() == "ok"
