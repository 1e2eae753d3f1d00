"""The collector against moto (server mode): 3 accounts × 2 regions, the findings SPEC §2 predicts,
failure isolation, pagination through a page-splitting proxy, and read-only by construction."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from awsproxy import AwsProxy
from estate import A, B, C, D, Estate, client, config_text, role
from helpers import USE_EXPANDED

from kmsaudit.config.settings import Config, load_config
from kmsaudit.evaluator.match import wildcard_match
from kmsaudit.model import ScanResult
from kmsaudit.run.scan import run_scan

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, accounts: tuple[str, ...] = (A, B, C), extra: str = "") -> Config:
    path = tmp_path / "kmsaudit.toml"
    path.write_text(config_text(accounts, extra=extra))
    return load_config(path)


def _table(result: ScanResult) -> dict[tuple[str, str, str], tuple[set[str], bool, tuple[str, ...]]]:
    return {
        (f.key_arn, f.principal, f.access): (set(f.actions), f.conditional, f.via)
        for f in result.findings
        if f.kind == "access"
    }


def _expected(e: Estate) -> dict[tuple[str, str, str], tuple[set[str], bool, tuple[str, ...]]]:
    kp, both, grant = ("key-policy",), ("iam-policy", "key-policy"), ("grant",)
    return {
        # SPEC §2.1/§3: the account is trusted (potential); IAM in B decides who does (effective).
        (e.keys["shared"], f"arn:aws:iam::{B}:root", "potential"): (USE_EXPANDED, False, kp),
        (e.keys["shared"], role(B, "Reader"), "effective"): ({"kms:Decrypt", "kms:Encrypt"}, False, both),
        # §2.9: managed policy default version (v2) ∧ permissions boundary (Decrypt only).
        (e.keys["shared"], role(B, "Bounded"), "effective"): ({"kms:Decrypt"}, False, both),
        # a user through its group's policy
        (e.keys["shared"], f"arn:aws:iam::{B}:user/Alice", "effective"): ({"kms:Encrypt"}, False, both),
        # §2.8: a grant with an encryption-context constraint: conditional
        (e.keys["granted"], role(C, "Batch"), "effective"): ({"kms:Decrypt", "kms:GenerateDataKey"}, True, grant),
        # §2.6/§3: "*" with only kms:ViaService is public, conditional
        (e.keys["public"], "*", "public"): ({"kms:Decrypt"}, True, kp),
        (e.keys["public"], role(B, "Bounded"), "effective"): ({"kms:Decrypt"}, True, both),
        # §2.2: a named role narrows the delegation
        (e.keys["narrowed"], role(B, "Reader"), "potential"): ({"kms:Decrypt"}, False, kp),
        (e.keys["narrowed"], role(B, "Reader"), "effective"): ({"kms:Decrypt"}, False, both),
        (e.keys["partner"], role(A, "Auditor"), "potential"): ({"kms:Decrypt"}, False, kp),
        (e.keys["partner"], role(A, "Auditor"), "effective"): ({"kms:Decrypt"}, False, both),
        # §3: "*" confined by kms:CallerAccount is potential for that account
        (e.keys["confined"], f"arn:aws:iam::{B}:root", "potential"): ({"kms:Decrypt"}, False, kp),
    }


async def test_scan_of_three_accounts_finds_what_the_spec_predicts(tmp_path: Path, estate: Estate) -> None:
    result = await run_scan(_config(tmp_path))
    assert [(s.account, s.region, s.ok) for s in result.scopes] == [
        (a, r, True) for a in (A, B, C) for r in ("eu-west-1", "us-east-1")
    ]
    assert result.keys == 6 and not result.iam_failures
    assert _table(result) == _expected(estate)
    public = next(f for f in result.findings if f.access == "public")
    assert public.zone == "external" and public.severity == "high"
    shared = next(f for f in result.findings if f.principal == role(B, "Reader") and f.key_arn == estate.keys["shared"])
    assert shared.zone == "trusted" and shared.severity == "low"  # B is audited: inside the zone of trust
    assert "iam-kms-resource-star" in {lint.kind for lint in result.lints}  # Alice's group: kms:Encrypt on "*"


async def test_an_account_whose_role_cannot_be_assumed_fails_alone(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = AwsProxy(aws, deny_assume={D})
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        result = await run_scan(_config(tmp_path, (A, B, C, D)))
    finally:
        proxy.stop()
    failed = [(s.account, s.region, s.error_code) for s in result.failed_scopes]
    assert failed == [(D, "eu-west-1", "access-denied"), (D, "us-east-1", "access-denied")]
    assert "AssumeRole" in result.failed_scopes[0].error
    assert D in result.iam_failures
    assert _table(result) == _expected(estate)  # every other scope complete and correct


async def test_pagination_collects_every_item_exactly_once(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kms = client("kms", A)
    for i in range(5):  # more grants and tags than a page holds
        kms.create_grant(KeyId=estate.ids["shared"], GranteePrincipal=role(C, f"Paged{i}"), Operations=["Decrypt"])
        kms.tag_resource(KeyId=estate.ids["shared"], Tags=[{"TagKey": f"t{i}", "TagValue": "v"}])
        kms.create_alias(AliasName=f"alias/paged{i}", TargetKeyId=estate.ids["shared"])
    plain = await run_scan(_config(tmp_path))
    proxy = AwsProxy(aws, page_size=2)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        paged = await run_scan(_config(tmp_path))
    finally:
        proxy.stop()
    calls = Counter(op for _, op in proxy.operations)
    # Really paged: ListAliases lists 14 alias/aws/* + 6 of ours; B has 7 IAM entities and policies.
    assert calls["ListAliases"] > 6 and calls["ListGrants"] > 6 and calls["GetAccountAuthorizationDetails"] > 3
    assert calls["ListResourceTags"] > 6
    assert _table(paged) == _table(plain)
    grantees = [f.principal for f in paged.findings if f.via == ("grant",)]
    assert sorted(grantees) == sorted([role(C, "Batch"), *(role(C, f"Paged{i}") for i in range(5))])


async def test_a_key_deleted_mid_scan_is_skipped_and_an_unreadable_policy_is_reported(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = AwsProxy(aws, vanish={estate.ids["granted"]}, deny_key_policy={estate.ids["shared"]})
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        result = await run_scan(_config(tmp_path))
    finally:
        proxy.stop()
    assert not result.failed_scopes and result.keys == 5
    assert not [f for f in result.findings if f.key_arn == estate.keys["granted"]]
    unreadable = [f for f in result.findings if f.key_arn == estate.keys["shared"]]
    assert [f.kind for f in unreadable] == ["unparseable"]
    assert "GetKeyPolicy" in unreadable[0].conditions[0]["error"]
    assert "DescribeKey" in unreadable[0].conditions[0]["error"]  # one key's denial never fails the scope


def _allowed(policy: dict, action: str) -> bool:
    allowed = False
    for stmt in policy["Statement"]:
        patterns = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        if any(wildcard_match(p, action, ignore_case=True) for p in patterns):
            if stmt["Effect"] == "Deny":
                return False
            allowed = True
    return allowed


async def test_every_operation_sent_is_allowed_by_the_read_only_audit_policy(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = json.loads((REPO / "deploy" / "iam" / "kmsaudit-readonly.json").read_text())
    granted = [
        a
        for s in policy["Statement"]
        if s["Effect"] == "Allow"
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]
    write_verbs = (
        "Create",
        "Put",
        "Delete",
        "Update",
        "Tag",
        "Untag",
        "Schedule",
        "Cancel",
        "Enable",
        "Disable",
        "Revoke",
        "Retire",
        "Encrypt",
        "Decrypt",
        "Generate",
        "Sign",
        "Import",
        "Replicate",
        "Attach",
    )
    assert not [a for a in granted if a.split(":")[1].startswith(write_verbs) or "*" in a]
    proxy = AwsProxy(aws)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        await run_scan(_config(tmp_path))
    finally:
        proxy.stop()
    sent = {(service, op) for service, op in proxy.operations if service != "sts"}  # AssumeRole: the caller's
    assert {op for _, op in sent} >= {
        "ListKeys",
        "ListAliases",
        "DescribeKey",
        "GetKeyPolicy",
        "ListGrants",
        "ListResourceTags",
        "GetAccountAuthorizationDetails",
    }
    for service, op in sent:
        assert _allowed(policy, f"{service}:{op}"), f"{service}:{op} is not in the audit role's policy"


async def test_throttling_is_retried_counted_and_never_a_failure(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backend allows 1 ListGrants/s per scope while kmsaudit is told AWS allows 50: every
    # burst is answered ThrottlingException, and botocore's retries (with jitter) must absorb it.
    proxy = AwsProxy(aws, quotas={"ListGrants": 1, "GetKeyPolicy": 1})
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        result = await run_scan(_config(tmp_path, extra="quotas = { ListGrants = 50, GetKeyPolicy = 50 }"))
    finally:
        proxy.stop()
    assert proxy.throttled > 0 and result.throttled == proxy.throttled  # every throttle seen and counted
    assert not result.failed_scopes
    assert _table(result) == _expected(estate)  # identical to an unthrottled scan


async def test_lists_are_read_in_the_largest_pages_aws_allows(
    estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue #19.13: ListGrants, ListAliases and ListKeys were paged without Limit (AWS's defaults,
    50/50/100 an answer): a key with 50,000 grants cost twice the ListGrants calls, at the slowest
    quota. The maxima are 100, 100 and 1,000."""
    proxy = AwsProxy(aws)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        path = tmp_path / "k.toml"
        path.write_text(config_text())
        await run_scan(load_config(path))
    finally:
        proxy.stop()
    limits = {
        op: {p.get("Limit") for o, p in proxy.params if o == op} for op in ("ListKeys", "ListAliases", "ListGrants")
    }
    assert limits == {"ListKeys": {1000}, "ListAliases": {100}, "ListGrants": {100}}


async def test_a_scan_keeps_policy_texts_only_for_changed_keys_and_bounds_scopes_at_once(
    estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue #19.10: every key's policy text stayed in memory until the scan ended, and every
    scope's collection started at once. Unchanged policies now keep only their hash, and at most
    `scan.scopes_at_once` scopes are read at the same time."""
    from kmsaudit.store.database import Store

    store = Store(tmp_path / "k.db")
    path = tmp_path / "k.toml"
    path.write_text(config_text(extra="scopes_at_once = 2"))
    first = await run_scan(load_config(path))
    store.save_scan(first)
    assert sum(len(s.key_policies) for s in first.scopes) == 6  # a first scan: every text is new

    proxy = AwsProxy(aws, latency=0.1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        second = await run_scan(load_config(path), known=store.known_policies())
    finally:
        proxy.stop()
    assert sum(len(s.key_policies) for s in second.scopes) == 0  # nothing changed: no text kept
    assert sum(len(s.key_hashes) for s in second.scopes) == 6
    _, events = store.save_scan(second)
    assert events == []
    assert proxy.max_in_flight["ListKeys"] <= 2
