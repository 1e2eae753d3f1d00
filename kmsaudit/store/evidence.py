"""The documents behind each snapshot's findings (kmsaudit/evidence.py; issue #27): written in
Store.save_scan's transaction, a version row only when a subject's text changed; read back by
`kmsaudit explain` as they stood at a snapshot. A part of Store (kmsaudit/store/database.py)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlite_utils

from kmsaudit.evaluator import AuditScope
from kmsaudit.evaluator.explain import unreadable_policy
from kmsaudit.evaluator.remedy import explain_and_remedy
from kmsaudit.evidence import ORG_SUBJECT, iam_subject, key_from, key_subject, organization_from, principals_from
from kmsaudit.model import Finding, KeyRecord
from kmsaudit.store.migrations import _pack, _unpack


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_DECIDED = ("access", "via", "actions", "conditional", "conditions", "conditional_actions", "kind")


def same_decision(decided: Finding, stored: Mapping[str, Any]) -> bool:
    """Is the finding decided again the one stored (not only its id: the id names key, principal,
    access and path, not the actions or conditions)?"""
    again = decided.to_dict()
    return all(json.dumps(again.get(k), sort_keys=True) == json.dumps(stored.get(k), sort_keys=True) for k in _DECIDED)


class Evidence:
    """Store's evidence records; Store provides the database."""

    db: sqlite_utils.Database

    def _latest_evidence(self, subjects: list[str], snapshot_id: int | None = None) -> dict[str, str]:
        """subject -> sha256 of its latest version (at or before `snapshot_id`)."""
        out: dict[str, str] = {}
        at = snapshot_id if snapshot_id is not None else 2**62
        for start in range(0, len(subjects), 500):
            chunk = subjects[start : start + 500]
            marks = ",".join("?" * len(chunk))
            # SQLite: with max(), the bare columns come from the row that has the maximum.
            for subject, sha, _ in self.db.conn.execute(
                f"SELECT subject, sha256, max(snapshot_id) FROM evidence_versions "
                f"WHERE subject IN ({marks}) AND snapshot_id <= ? GROUP BY subject",
                [*chunk, at],
            ):
                out[subject] = sha
        return out

    def _write_evidence(self, snapshot_id: int, pairs: Iterable[tuple[str, str]]) -> None:
        """Inside the snapshot's transaction: a version for each subject whose text changed."""
        pairs = list(pairs)
        if not pairs:
            return
        latest = self._latest_evidence([subject for subject, _ in pairs])
        changed = [(subject, text, _digest(text)) for subject, text in pairs]
        changed = [c for c in changed if latest.get(c[0]) != c[2]]
        sql = self.db.conn
        sql.executemany(
            "INSERT OR IGNORE INTO evidence (sha256, body) VALUES (?, ?)", [(d, _pack(t)) for _, t, d in changed]
        )
        sql.executemany(
            "INSERT OR REPLACE INTO evidence_versions (snapshot_id, subject, sha256) VALUES (?, ?, ?)",
            [(snapshot_id, s, d) for s, _, d in changed],
        )

    def evidence_at(self, subjects: Iterable[str], snapshot_id: int | None = None) -> dict[str, str]:
        """The texts of `subjects` as they stood at the snapshot (those ever recorded)."""
        latest = self._latest_evidence(sorted(set(subjects)), snapshot_id)
        out = {}
        for subject, sha in latest.items():
            row = self.db.conn.execute("SELECT body FROM evidence WHERE sha256 = ?", [sha]).fetchone()
            if row is not None:
                out[subject] = _unpack(row[0])
        return out

    def evidence_subjects(self, prefix: str, snapshot_id: int | None = None) -> list[str]:
        """Subjects recorded at or before the snapshot that start with `prefix` (e.g. "iam:")."""
        at = snapshot_id if snapshot_id is not None else 2**62
        rows = self.db.conn.execute(
            "SELECT DISTINCT subject FROM evidence_versions WHERE subject >= ? AND subject < ? AND snapshot_id <= ?",
            [prefix, prefix + "\U0010ffff", at],
        )
        return sorted(r[0] for r in rows)

    def policy_at(self, key_arn: str, snapshot_id: int | None = None, readable: bool = False) -> str | None:
        """The key's policy text (canonical) as it stood at the snapshot; None if never read (or,
        unless `readable`, if its last read failed)."""
        at = snapshot_id if snapshot_id is not None else 2**62
        row = self.db.conn.execute(
            "SELECT p.text FROM policy_versions v LEFT JOIN policies p ON p.sha256 = v.sha256 "
            f"WHERE v.key_arn = ? AND v.snapshot_id <= ? {'AND p.text IS NOT NULL ' if readable else ''}"
            "ORDER BY v.snapshot_id DESC LIMIT 1",
            [key_arn, at],
        ).fetchone()
        return row[0] if row is not None else None

    def stored_key(self, key_arn: str, snapshot_id: int | None = None) -> KeyRecord | None:
        """The key as a snapshot's evaluation read it (policy, grants, tags, properties); None
        when the snapshot is older than the evidence kmsaudit keeps."""
        text = self.evidence_at([key_subject(key_arn)], snapshot_id).get(key_subject(key_arn))
        # An unreadable key keeps the findings of its last readable policy (SPEC §5): explained by it.
        return key_from(text, self.policy_at(key_arn, snapshot_id, readable=True)) if text is not None else None

    def stored_scope(self, snapshot_id: int | None, trusted: Iterable[str]) -> AuditScope:
        """The audit scope as a snapshot's evaluation had it: the principals of the accounts the
        snapshot audits and the organization, as last read at or before it; `trusted`: the
        config's zone of trust (the snapshot's own accounts are added)."""
        # The accounts of the snapshot's scopes, by their rows alone (scope_view would unpack every
        # scope's state, and every re-read is a snapshot).
        scanned = sorted(
            {r[0] for r in self.db.conn.execute("SELECT account FROM scopes WHERE snapshot_id = ?", [snapshot_id])}
        )
        accounts = [s.removeprefix("iam:") for s in self.evidence_subjects("iam:", snapshot_id)]
        accounts = [a for a in accounts if a in scanned]
        subjects = [iam_subject(a) for a in accounts] + [ORG_SUBJECT]
        trusted = [*trusted, *scanned]
        # Snapshots between two reads of IAM share its documents: one compiled scope for them all
        # (a delivery round explains the alerts of many re-reads' snapshots).
        marker = (tuple(trusted), tuple(sorted(self._latest_evidence(subjects, snapshot_id).items())))
        cache: dict[Any, AuditScope] = self.__dict__.setdefault("_stored_scopes", {})
        if marker not in cache:
            texts = self.evidence_at(subjects, snapshot_id)
            principals = [
                p for a in accounts if iam_subject(a) in texts for p in principals_from(texts[iam_subject(a)])
            ]
            org = organization_from(texts[ORG_SUBJECT]) if ORG_SUBJECT in texts else None
            cache.clear()  # one at a time: a scope may be large
            cache[marker] = AuditScope(
                principals, audited_accounts=accounts, trusted_accounts=trusted, organization=org
            )
        return cache[marker]

    def explain_stored(
        self,
        snapshot_id: int | None,
        findings: Iterable[Mapping[str, Any]],
        scope: AuditScope,
        max_keys: int = 10**9,
        deadline: float | None = None,
    ) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """finding id -> (explanation, remediation) for the stored findings the snapshot's
        documents give again, as stored (the same actions, conditions and access: a scope carried
        over from an older read is not explained by newer documents), SPEC §4: those of the first
        `max_keys` keys they name, in their order, until `deadline` (time.monotonic())."""
        by_key: dict[str, dict[str, Mapping[str, Any]]] = {}
        for finding in findings:
            by_key.setdefault(str(finding["key_arn"]), {})[str(finding["id"])] = finding
        out: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for wanted in by_key.values():  # a policy that could not be read rests on no statement
            for finding_id, finding in list(wanted.items()):
                if finding.get("kind") == "unparseable":
                    out[finding_id] = (unreadable_policy(finding.get("conditions") or ()), [])
                    del wanted[finding_id]
        for key_arn in [k for k, w in by_key.items() if w][:max_keys]:  # in the order the findings came
            if deadline is not None and time.monotonic() >= deadline:
                break
            key = self.stored_key(key_arn, snapshot_id)
            if key is None:
                continue
            wanted = by_key[key_arn]
            for decided, explanation, remediation in explain_and_remedy(key, scope, only=set(wanted)):
                if same_decision(decided, wanted[decided.id]):
                    out[decided.id] = (explanation, remediation)
        return out
