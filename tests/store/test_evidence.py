"""Issue #27: the documents kept with each snapshot (kmsaudit/store/evidence.py) answer for it —
after retention prunes older snapshots, and never for a finding they did not decide (a scope
carried over from an older read, with IAM read anew). Cases from the change's review."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import ROLE_B, USE_ACTIONS, A, B, allow, iam_allow, policy, principal

from kmsaudit.evaluator import AuditScope, evaluate_keys
from kmsaudit.evidence import iam_subject, key_text, principals_text
from kmsaudit.model import Grant, KeyRecord, ScanResult, ScopeStatus
from kmsaudit.store.database import Store

K = f"arn:aws:kms:us-east-1:{A}:key/k1"
L = f"arn:aws:kms:eu-west-1:{A}:key/l1"
DOC = json.dumps(policy(allow({"AWS": f"arn:aws:iam::{B}:root"}, USE_ACTIONS)))


def _key(arn: str, grants: tuple[Grant, ...] = ()) -> KeyRecord:
    parts = arn.split(":")
    return KeyRecord(arn, A, parts[3], parts[5].split("/")[1], policy=DOC, grants=grants)


def _status(key: KeyRecord, policies: dict[str, str | None]) -> ScopeStatus:
    return ScopeStatus(
        A,
        key.region,
        True,
        1,
        key_policies=((key.arn, policies[key.arn]),),
        key_evidence=() if key.unreadable else ((key.arn, key_text(key)),),  # as scope_part writes it
        unreadable=((key.arn, key.unreadable),) if key.unreadable else (),
    )


def _result(at: float, keys: list[KeyRecord], failed: tuple[str, ...] = (), principals=()) -> ScanResult:
    scope = AuditScope(principals, audited_accounts=[A, B])
    evaluation = evaluate_keys(keys, scope)
    policies = dict(evaluation.policies)
    scopes = [_status(k, policies) for k in keys] + [ScopeStatus(A, r, False, 0, "boom", "x") for r in failed]
    evidence = ((iam_subject(A), "[]"), (iam_subject(B), principals_text(principals)))
    return ScanResult(
        evaluation.findings, (), tuple(scopes), started_at=at - 1, finished_at=at, keys=len(keys), evidence=evidence
    )


def test_a_snapshot_kept_by_retention_keeps_the_documents_it_was_decided_from(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    store.save_scan(_result(1000, [_key(K), _key(L)]))
    store.save_scan(_result(2000, [_key(K), _key(L)]))  # nothing changed: no new versions
    grant = Grant("g1", f"arn:aws:iam::{B}:role/X", ("Decrypt",))
    store.save_scan(_result(3000, [_key(K, (grant,))], failed=("eu-west-1",)))  # keeps snapshot 2 for L's scope
    assert store.prune(1, now=10**7) == 1
    assert store.snapshot(1) is None and store.snapshot(2) is not None
    kept = store.stored_key(K, 2)
    assert kept is not None and kept.grants == () and kept.policy == store.policy_at(K, 2) is not None  # as 2 read it
    assert store.stored_key(K, 3) is not None and store.stored_key(K, 3).grants == (grant,)
    explained = store.explain_stored(2, store.findings(2), store.stored_scope(2, []))
    assert set(explained) == {f["id"] for f in store.findings(2)}


def test_a_carried_finding_is_not_explained_by_newer_documents(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    both = principal(ROLE_B, iam_allow(["kms:Decrypt", "kms:Encrypt"], resource="*"))
    store.save_scan(_result(1000, [_key(K)], principals=[both]))
    fewer = principal(ROLE_B, iam_allow(["kms:Decrypt"], resource="*"))
    failed = _result(2000, [], failed=("us-east-1",), principals=[fewer])  # KMS carried, IAM read anew
    store.save_scan(failed)
    stored = next(f for f in store.findings(2) if f["principal"] == ROLE_B and f["access"] == "effective")
    assert stored["actions"] == ["kms:Decrypt", "kms:Encrypt"]
    assert store.explain_stored(2, [stored], store.stored_scope(2, [])) == {}  # not a different finding's why


def test_a_key_whose_policy_could_not_be_read_is_explained_with_the_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    denied = KeyRecord(K, A, "us-east-1", "k1", policy=None, errors=("GetKeyPolicy: AccessDeniedException: denied",))
    store.save_scan(_result(1000, [denied]))
    (stored,) = [f for f in store.findings(1) if f["kind"] == "unparseable"]
    ((explanation, remediation),) = store.explain_stored(1, [stored], store.stored_scope(1, [])).values()
    assert "AccessDeniedException" in explanation[0]["conditions"][0]["values"][0] and remediation == []


def test_an_unreadable_keys_carried_findings_are_explained_by_its_last_readable_policy(tmp_path: Path) -> None:
    # Found explaining the events soak's database: a key whose reads fail keeps the findings of its
    # last readable policy (SPEC §5) beside the finding that says it is unreadable; both explained.
    store = Store(tmp_path / "k.db")
    store.save_scan(_result(1000, [_key(K)]))
    unreadable = KeyRecord(
        K, A, "us-east-1", "k1", policy=None, errors=("GetKeyPolicy: AccessDeniedException",), unreadable="AccessDenied"
    )
    store.save_scan(_result(2000, [unreadable]))
    findings = store.findings(2)
    assert {f["kind"] for f in findings} == {"access", "unparseable"}
    assert set(store.explain_stored(2, findings, store.stored_scope(2, []))) == {f["id"] for f in findings}
