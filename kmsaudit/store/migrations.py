"""The snapshot database's schema, version by version (kmsaudit/store/database.py applies them in order,
each in its own transaction), and how stored texts are packed."""

from __future__ import annotations

import zlib

import sqlite_utils

from kmsaudit.drift import ScopeState, policy_hash

SCHEMA_VERSION = 8


def _pack(text: str) -> bytes:
    return zlib.compress(text.encode(), 6)


def _unpack(blob: bytes) -> str:
    return zlib.decompress(blob).decode()


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("snapshots").create(
        {
            "id": int,
            "started_at": float,
            "finished_at": float,
            "complete": int,
            "keys": int,
            "findings": int,
            "requests": int,
            "throttled": int,
            "lints": bytes,
        },
        pk="id",
    )
    db.table("states").create({"digest": str, "body": bytes}, pk="digest")
    db.table("policies").create({"sha256": str, "text": str}, pk="sha256")
    db.table("scopes").create(
        {
            "snapshot_id": int,
            "account": str,
            "region": str,
            "ok": int,
            "error": str,
            "error_code": str,
            "keys": int,
            "state": str,
        },
        pk=("snapshot_id", "account", "region"),
        foreign_keys=[("snapshot_id", "snapshots", "id"), ("state", "states", "digest")],
    )
    db.table("scopes").create_index(["account", "region", "ok", "snapshot_id"])
    # A row only when a key's policy changed (or the key appeared): history, not a per-scan copy.
    db.table("policy_versions").create(
        {"snapshot_id": int, "key_arn": str, "sha256": str}, pk=("key_arn", "snapshot_id")
    )
    db.table("drift").create(
        {
            "id": str,
            "snapshot_id": int,
            "kind": str,
            "key_arn": str,
            "principal": str,
            "account": str,
            "region": str,
            "severity": str,
            "detected_at": float,
            "body": str,
        },
        pk="id",
        foreign_keys=[("snapshot_id", "snapshots", "id")],
    )
    db.table("drift").create_index(["detected_at"])


def _migration_2(db: sqlite_utils.Database) -> None:
    """The durable alert outbox: one row per (drift event, sink), written with the snapshot."""
    db.table("outbox").create(
        {
            "event_id": str,
            "sink": str,
            "snapshot_id": int,
            "payload": str,
            "created_at": float,
            "attempts": int,
            "next_attempt_at": float,
            "delivered_at": float,
            "last_error": str,
        },
        pk=("event_id", "sink"),
        not_null={"attempts", "next_attempt_at"},
        defaults={"attempts": 0},
    )
    db.table("outbox").create_index(["delivered_at", "next_attempt_at"])


def _migration_3(db: sqlite_utils.Database) -> None:
    """Cumulative counters (drift events, scope failures, AWS requests, scan durations): a
    Prometheus counter must never go back, and a cron scan is a new process each time (issue #13)."""
    db.table("counters").create({"name": str, "labels": str, "value": float}, pk=("name", "labels"))


def _migration_4(db: sqlite_utils.Database) -> None:
    """Key policies in canonical form (issue #14): earlier releases stored and hashed them as KMS
    returned them, in a new order on every call. Their texts, versions and the hashes in every
    scope state are rewritten canonically, so the first scan after the upgrade sees unchanged
    policies as unchanged."""
    from kmsaudit.evaluator.policy import canonical_policy

    rehash: dict[str, str] = {}
    for sha, text in db.execute("SELECT sha256, text FROM policies").fetchall():
        canonical = canonical_policy(text) or text
        rehash[sha] = policy_hash(canonical)
        db.execute("DELETE FROM policies WHERE sha256 = ?", [sha])
        db.execute("INSERT OR IGNORE INTO policies (sha256, text) VALUES (?, ?)", [rehash[sha], canonical])
    db.conn.executemany(
        "UPDATE policy_versions SET sha256 = ? WHERE sha256 = ?",
        [(new, old) for old, new in rehash.items() if new != old],
    )
    for digest, body in db.execute("SELECT digest, body FROM states").fetchall():
        state = ScopeState.from_json(_unpack(body))
        rewritten = ScopeState(state.findings, {arn: rehash.get(h, h) for arn, h in state.keys.items()}, state.names)
        new_digest = rewritten.digest()
        if new_digest == digest:
            continue
        db.execute(
            "INSERT OR IGNORE INTO states (digest, body) VALUES (?, ?)", [new_digest, _pack(rewritten.to_json())]
        )
        db.execute("UPDATE scopes SET state = ? WHERE state = ?", [new_digest, digest])
        db.execute("DELETE FROM states WHERE digest = ?", [digest])


def _migration_5(db: sqlite_utils.Database) -> None:
    """Accepted access (issue #15): when each entry was first configured and last accepted a
    finding (for the acceptance-unused lint), and each finding's acceptance changes, by snapshot
    (so `history` shows when access was accepted, by which entry, and when that lapsed)."""
    db.table("acceptance_entries").create(
        {"entry_id": str, "first_seen_at": float, "last_matched_at": float}, pk="entry_id"
    )
    db.table("acceptances").create(
        {
            "snapshot_id": int,
            "key_arn": str,
            "principal": str,
            "access": str,
            "entry_id": str,
            "change": str,  # accepted | lapsed | outgrown
            "at": float,
        },
        foreign_keys=[("snapshot_id", "snapshots", "id")],
    )
    db.table("acceptances").create_index(["key_arn", "snapshot_id"])


def _migration_6(db: sqlite_utils.Database) -> None:
    """Exports (issue #16): what each export was last sent of each finding (its digest, when, and
    the finding itself, to archive it once it is gone), and the outbox row's subject (a finding
    id), so a newer state of a finding replaces an older one still waiting to be sent."""
    db.execute("ALTER TABLE outbox ADD COLUMN subject TEXT")
    db.execute("CREATE INDEX outbox_subject ON outbox (sink, subject) WHERE subject IS NOT NULL")
    db.table("exported").create(
        {
            "sink": str,
            "finding_id": str,
            "digest": str,
            "first_at": float,
            "queued_at": float,
            "archived": int,
            "body": bytes,
        },
        pk=("sink", "finding_id"),
        not_null={"digest", "first_at", "queued_at", "archived"},
    )


def _migration_7(db: sqlite_utils.Database) -> None:
    """Every snapshot accounts for every scope (issue #24, SPEC §5): a scope carried over by an
    event's re-read keeps when it was last read completely (`read_at`) and last scanned
    (`attempted_at`), so no freshness metric advances for a scope nobody read. Rows of earlier
    releases leave both empty: their snapshot's end stands for them. The accounts whose IAM could
    not be read (`iam_failures`, JSON) are kept with the snapshot, so that a re-read, which reads
    no IAM, inherits them as the scan before found them."""
    db.execute("ALTER TABLE scopes ADD COLUMN read_at REAL")
    db.execute("ALTER TABLE scopes ADD COLUMN attempted_at REAL")
    db.execute("ALTER TABLE snapshots ADD COLUMN iam_failures TEXT")


def _migration_8(db: sqlite_utils.Database) -> None:
    """Evidence (issue #27): the documents each snapshot's findings were decided from besides the
    key policies (a key's grants, tags and properties; an account's principals and policies; the
    organization), each distinct text once (`evidence`, packed), and a version row only when a
    subject's text changed, as `policy_versions` does for key policies. `kmsaudit explain` reads
    the versions at or before a snapshot."""
    db.table("evidence").create({"sha256": str, "body": bytes}, pk="sha256")
    db.table("evidence_versions").create(
        {"snapshot_id": int, "subject": str, "sha256": str}, pk=("subject", "snapshot_id")
    )


MIGRATIONS = {
    1: _migration_1,
    2: _migration_2,
    3: _migration_3,
    4: _migration_4,
    5: _migration_5,
    6: _migration_6,
    7: _migration_7,
    8: _migration_8,
}
