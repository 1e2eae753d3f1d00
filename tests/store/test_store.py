"""The snapshot store on a real SQLite file: retention, growth, migrations (SIGKILL mid-write:
tests/faults/test_crash.py)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from synthetic import ACCOUNT, scan

from kmsaudit.model import ScanResult, ScopeStatus
from kmsaudit.store.database import Store


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


def test_retention_still_runs_after_an_acceptance_changed(tmp_path: Path) -> None:
    """Issue #24, defect 5: `acceptances` keeps a foreign key to `snapshots` that prune never
    deleted, so once an acceptance had changed every later prune failed (and the database grew
    until the disk was full)."""
    store = Store(tmp_path / "k.db")
    day, now = 86400.0, 1_800_000_000.0
    first = scan(5, finished_at=now - 200 * day)
    accepted = dataclasses.replace(
        first, findings=tuple(f._replace(accepted=True, accepted_by="ticket-1") for f in first.findings)
    )
    store.save_scan(accepted, detected_at=now - 200 * day)  # accepted: rows in `acceptances`
    store.save_scan(scan(5, finished_at=now - 150 * day), detected_at=now - 150 * day)  # lapsed
    store.save_scan(scan(5, finished_at=now - 100 * day), detected_at=now - 100 * day)
    assert store.db.execute("SELECT count(*) FROM acceptances").fetchone()[0] == 10
    assert store.prune(90, now=now) == 2
    assert store.prune(90, now=now) == 0  # and again: nothing left to fail on
    assert store.db.execute("SELECT count(*) FROM acceptances").fetchone()[0] == 0
    assert store.integrity() == "ok"
    store.save_scan(scan(5, finished_at=now))
    assert store.prune(90, now=now) == 1  # the 100-day-old one, no longer the last good state
    assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []  # no table left naming one


def _on_disk(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return os.path.getsize(path) + (os.path.getsize(wal) if wal.exists() else 0)


def test_an_unchanged_estate_grows_the_database_by_little(tmp_path: Path) -> None:
    """An unchanged scope costs one small row per scan, WAL included (issue #19: the test used
    one scope, and so could not see what a scope row costs an estate of many)."""
    store = Store(tmp_path / "k.db")
    one = scan(20)
    scopes = tuple(
        ScopeStatus(f"{200000000000 + j}", "us-east-1", True, 20, key_policies=one.scopes[0].key_policies)
        for j in range(100)
    )
    result = ScanResult(one.findings, (), scopes, started_at=1.0, finished_at=2.0, keys=2000)
    store.save_scan(result)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = _on_disk(store.path)
    largest_wal = 0
    for _ in range(50):
        store.save_scan(result)
        largest_wal = max(largest_wal, os.path.getsize(f"{store.path}-wal"))
    assert largest_wal < 8 * 1024 * 1024, largest_wal  # SQLite's automatic checkpoints keep the WAL bounded
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    per_scope_scan = (_on_disk(store.path) - size) / (50 * 100)
    assert per_scope_scan < 250, per_scope_scan  # a row, not a copy (README: about 180 bytes)


def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite_utils

    from kmsaudit.store.database import MIGRATIONS, SCHEMA_VERSION

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


def _with_effective(result: ScanResult, principal: str) -> ScanResult:
    """The same scan, `principal` also holding a grant (effective) where it is named (potential)."""
    extra = tuple(
        f._replace(principal=principal, principal_account=principal.split(":")[4], access=access, via=via)
        for f in result.findings[:1]
        for access, via in (("potential", ("key-policy",)), ("effective", ("grant",)))
    )
    return ScanResult(
        result.findings + extra,
        result.lints,
        result.scopes,
        started_at=result.started_at,
        finished_at=result.finished_at,
    )


def test_two_events_for_one_principal_with_two_access_levels_are_two_alerts(tmp_path: Path) -> None:
    """Issue #19.6: the drift event id left out `access`; one principal with `effective` (a grant)
    and `potential` (the key policy) added in one scan kept one drift row and one outbox row."""
    store = Store(tmp_path / "k.db")
    store.save_scan(scan(1))
    _, events = store.save_scan(_with_effective(scan(1), "arn:aws:iam::999988887777:root"), route=lambda e: ["hook"])
    assert sorted((e.kind, e.after["access"]) for e in events) == [("added", "effective"), ("added", "potential")]
    assert len({e.id for e in events}) == 2
    assert store.pending_alerts() == 2
    assert len(store.drift()) == 2


def test_on_baseline_sinks_get_the_first_scans_findings_and_the_drift_stays_empty(tmp_path: Path) -> None:
    """Issue #14: `on_baseline` pages a scope's first scan (the first day's public keys) without
    calling it drift: the events go to those sinks' outbox only."""
    store = Store(tmp_path / "k.db")
    _, events = store.save_scan(scan(3), route=lambda e: ["hook"], route_baseline=lambda e: ["pager"])
    assert events == [] and store.drift() == []  # the first scan is still a baseline
    due = store.due_alerts(time.time() + 1)
    assert {(a["sink"], a["event"]["kind"], a["event"]["baseline"]) for a in due} == {("pager", "added", True)}
    assert len(due) == 3  # one per finding of the baseline
    _, events = store.save_scan(scan(3), route=lambda e: ["hook"], route_baseline=lambda e: ["pager"])
    assert events == [] and len(store.due_alerts(time.time() + 1)) == 3  # a second scan is no baseline


def test_an_events_snapshot_carries_the_estate_and_counts_it_without_reading_every_state(tmp_path: Path) -> None:
    """Issue #17: a re-read of some keys of one scope is a snapshot of the whole estate — the
    other scopes carried, the totals the estate's — and a re-read that failed is no complete
    snapshot, and keeps the scope's last good state."""
    import dataclasses

    store = Store(tmp_path / "k.db")
    full = scan(4)
    other = ScopeStatus("999988887777", "eu-west-1", True, 0)
    store.save_scan(dataclasses.replace(full, scopes=(*full.scopes, other)))
    first = store.snapshot()
    assert first is not None and first["complete"]
    # Key 0 re-read: it lost its finding. One scope touched, the other carried as it was.
    gone = "arn:aws:kms:us-east-1:111122223333:key/00000000"
    kept = tuple(f for f in full.findings if f.key_arn != gone)
    touched = ScopeStatus(ACCOUNT, "us-east-1", True, 1, key_policies=(), partial=(gone,))
    partial = ScanResult((), (), (touched,), started_at=time.time(), finished_at=time.time(), keys=1)
    _, events = store.save_scan(partial)
    assert [e.kind for e in events] == ["key-deleted"]  # its findings go with it
    second = store.snapshot()
    assert second is not None and second["complete"]
    assert (second["keys"], second["findings"]) == (3, len(kept))
    assert {(v.account, v.region) for v in store.scope_view()} == {
        (ACCOUNT, "us-east-1"),
        ("999988887777", "eu-west-1"),
    }
    assert {f["key_arn"] for f in store.findings()} == {f.key_arn for f in kept}
    # The next re-read fails: the snapshot is not complete, the last good state still shows.
    failed = ScopeStatus(ACCOUNT, "us-east-1", False, 0, "boom", "x", partial=(gone,))
    store.save_scan(ScanResult((), (), (failed,), started_at=time.time(), finished_at=time.time()))
    third = store.snapshot()
    assert third is not None and not third["complete"]
    assert {f["key_arn"] for f in store.findings()} == {f.key_arn for f in kept}
    store.close()


def test_a_clock_stepped_back_does_not_make_an_older_snapshot_the_baseline(tmp_path: Path) -> None:
    """The latest good state of a scope is the one committed last (snapshot id), not the one
    whose wall-clock start is latest: a clock stepped back an hour between two scans made the
    older snapshot look newer, so the next scan diffed against it (a finding added in the later
    scan was alerted again, and one it removed came back in `findings` of a failed scope) and a
    re-read kept the older read time. Read times stay what the clock said: data, not order."""
    store = Store(tmp_path / "k.db")
    outsider = "arn:aws:iam::777788889999:root"
    now = 1_800_000_000.0
    store.save_scan(scan(3, finished_at=now), detected_at=now)
    # The clock is stepped back an hour; this later scan sees one more outside account.
    later = scan(3, extra_principal=outsider, finished_at=now - 3600)
    _, events = store.save_scan(later, detected_at=now - 3600)
    assert {(e.kind, e.principal) for e in events} == {("added", outsider)}
    state = store.last_good_state(ACCOUNT, "us-east-1")
    assert state is not None and {f["principal"] for f in state.findings.values()} == {
        "arn:aws:iam::444455556666:root",
        outsider,
    }
    # The next scan sees the same: no drift (on the wall clock's order it was `added` again).
    _, events = store.save_scan(scan(3, extra_principal=outsider, finished_at=now - 3500), detected_at=now - 3500)
    assert events == []
    # It then fails: `findings` shows the last good state, the one committed last.
    store.save_scan(scan(3, ok=False, finished_at=now - 3400), detected_at=now - 3400)
    assert outsider in {f["principal"] for f in store.findings()}
    # A re-read of one key keeps the read time of the state it changes (the later scan's,
    # though its clock said earlier).
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/00000000"
    touched = ScopeStatus(ACCOUNT, "us-east-1", True, 1, key_policies=(), partial=(key,))
    store.save_scan(ScanResult((), (), (touched,), started_at=now - 3300, finished_at=now - 3300, keys=1))
    [view] = store.scope_view()
    assert view.ok and view.last_good_at == now - 3500 - 1  # the last full read's start
    store.close()
