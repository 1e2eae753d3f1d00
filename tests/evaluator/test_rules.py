"""Table-driven tests: one case per rule of SPEC §2–§3, each naming the rule it checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import (
    KEY_ARN,
    OTHER_ROLE_B,
    ROLE_B,
    ROOT_B,
    USE_ACTIONS,
    USE_EXPANDED,
    USER_B,
    A,
    B,
    C,
    allow,
    by,
    deny,
    iam_allow,
    iam_deny,
    policy,
    principal,
    run,
)

from kmsaudit.model import Grant, Organization

DECRYPT = {"kms:Decrypt"}
CROSS = USE_EXPANDED | {
    "kms:GenerateMac",
    "kms:Sign",
    "kms:Verify",
    "kms:VerifyMac",
    "kms:DeriveSharedSecret",
    "kms:CreateGrant",
    "kms:GetKeyRotationStatus",
    "kms:GetPublicKey",
    "kms:ListGrants",
    "kms:RetireGrant",
    "kms:RevokeGrant",
}
NONE: set[str] = set()
ORG = Organization(org_id="o-ourorg1234", accounts=frozenset({A, B}))


@dataclass
class Case:
    rule: str
    name: str
    doc: Any
    principals: tuple[Any, ...] = ()
    # (principal, access) -> expected actions (empty set: no such finding)
    expect: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    conditional: dict[tuple[str, str], bool] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)


ROLE_DECRYPT = principal(ROLE_B, iam_allow("kms:Decrypt"))
ROLE_ALL = principal(ROLE_B, iam_allow("kms:*"))

CASES = [
    # §2.1 both sides must allow
    Case(
        "§2.1",
        "account trusted and IAM delegates: effective is the intersection",
        policy(allow({"AWS": ROOT_B}, USE_ACTIONS)),
        (ROLE_DECRYPT,),
        {(ROLE_B, "effective"): DECRYPT, (ROOT_B, "potential"): USE_EXPANDED},
    ),
    Case(
        "§2.1",
        "account trusted, no IAM policy: potential only",
        policy(allow({"AWS": ROOT_B}, USE_ACTIONS)),
        (principal(ROLE_B),),
        {(ROLE_B, "effective"): NONE, (ROOT_B, "potential"): USE_EXPANDED},
    ),
    Case(
        "§2.1",
        "IAM allows but the key policy does not name the account: nothing",
        policy(),
        (ROLE_ALL,),
        {(ROLE_B, "effective"): NONE, (ROOT_B, "potential"): NONE},
    ),
    Case(
        "§2.1",
        "key policy names the role itself, no IAM policy: still no effective access",
        policy(allow({"AWS": ROLE_B}, USE_ACTIONS)),
        (principal(ROLE_B),),
        {(ROLE_B, "effective"): NONE, (ROLE_B, "potential"): USE_EXPANDED},
    ),
    Case(
        "§2.1",
        "Deny in the key policy wins over both allows",
        policy(allow({"AWS": ROOT_B}), deny({"AWS": ROLE_B}, "kms:Decrypt")),
        (ROLE_ALL,),
        {(ROLE_B, "effective"): CROSS - DECRYPT},
    ),
    Case(
        "§2.1",
        "Deny in the caller's IAM policy wins",
        policy(allow({"AWS": ROOT_B})),
        (principal(ROLE_B, iam_allow("kms:*"), iam_deny("kms:Decrypt")),),
        {(ROLE_B, "effective"): CROSS - DECRYPT},
    ),
    Case(
        "§2.1",
        "bare account id in the key policy is the account",
        policy(allow({"AWS": B}, "kms:Decrypt")),
        (ROLE_ALL,),
        {(ROLE_B, "effective"): DECRYPT, (ROOT_B, "potential"): DECRYPT},
    ),
    # §2.2 a named principal narrows the delegation
    Case(
        "§2.2",
        "IAM gives the key to a role the key policy does not name: no effect",
        policy(allow({"AWS": ROLE_B}, USE_ACTIONS)),
        (ROLE_ALL, principal(OTHER_ROLE_B, iam_allow("kms:*"))),
        {(ROLE_B, "effective"): USE_EXPANDED, (OTHER_ROLE_B, "effective"): NONE, (ROOT_B, "potential"): NONE},
    ),
    Case(
        "§2.2",
        "user named by ARN; its group's policy delegates",
        policy(allow({"AWS": USER_B}, "kms:Decrypt")),
        (principal(USER_B, iam_allow("kms:Decrypt")),),
        {(USER_B, "effective"): DECRYPT},
    ),
    # §2.3 only some actions work across accounts
    Case(
        "§2.3",
        "kms:* to an external account is limited to the cross-account operations",
        policy(allow({"AWS": ROOT_B})),
        (ROLE_ALL,),
        {(ROOT_B, "potential"): CROSS, (ROLE_B, "effective"): CROSS},
    ),
    Case(
        "§2.3",
        "ScheduleKeyDeletion and PutKeyPolicy to an external account are no access",
        policy(allow({"AWS": ROOT_B}, ["kms:ScheduleKeyDeletion", "kms:PutKeyPolicy", "kms:ListKeys"])),
        (ROLE_ALL,),
        {(ROOT_B, "potential"): NONE, (ROLE_B, "effective"): NONE},
    ),
    # §2.4 action matching
    Case(
        "§2.4",
        "kms:ReEncrypt* is ReEncryptFrom and ReEncryptTo",
        policy(allow({"AWS": ROOT_B}, "kms:ReEncrypt*")),
        (),
        {(ROOT_B, "potential"): {"kms:ReEncryptFrom", "kms:ReEncryptTo"}},
    ),
    Case(
        "§2.4",
        "action names are case-insensitive, ? is one character",
        policy(allow({"AWS": ROOT_B}, ["KMS:decrypt", "kms:Gen?rateMac"])),
        (),
        {(ROOT_B, "potential"): {"kms:Decrypt", "kms:GenerateMac"}},
    ),
    Case(
        "§2.4",
        "'kms:' (002_…txt) matches nothing and never crashes",
        policy(allow({"AWS": ROOT_B}, "kms:")),
        (ROLE_ALL,),
        {(ROOT_B, "potential"): NONE, (ROLE_B, "effective"): NONE},
    ),
    Case(
        "§2.4",
        "NotAction allows everything else",
        policy(allow({"AWS": ROOT_B}, None, NotAction="kms:Decrypt") | {"Action": None}),
        (),
        {(ROOT_B, "potential"): CROSS - DECRYPT},
    ),
    Case("§2.4", "'*' is every action", policy(allow({"AWS": ROOT_B}, "*")), (), {(ROOT_B, "potential"): CROSS}),
    # §2.5 principal forms
    Case(
        "§2.5",
        "assumed-role session principal is named by its ARN",
        policy(allow({"AWS": f"arn:aws:sts::{B}:assumed-role/ExampleRole/alice"}, "kms:Decrypt")),
        (),
        {(f"arn:aws:sts::{B}:assumed-role/ExampleRole/alice", "potential"): DECRYPT},
    ),
    Case(
        "§2.5",
        "a session principal gives its role conditional effective access",
        policy(allow({"AWS": f"arn:aws:sts::{B}:assumed-role/ExampleRole/alice"}, "kms:Decrypt")),
        (ROLE_ALL,),
        {(ROLE_B, "effective"): DECRYPT},
        {(ROLE_B, "effective"): True},
    ),
    Case(
        "§2.5",
        "a unique id (deleted role) grants nothing",
        policy(allow({"AWS": "AROAEXAMPLEID12345678"}, "kms:Decrypt")),
        (),
        {("AROAEXAMPLEID12345678", "potential"): NONE},
    ),
    Case(
        "§2.5",
        "an IAM group is never a principal",
        policy(allow({"AWS": f"arn:aws:iam::{B}:group/Admins"}, "kms:Decrypt")),
        (),
        {(f"arn:aws:iam::{B}:group/Admins", "potential"): NONE},
    ),
    Case(
        "§2.5",
        "aws-cn partition is ordinary",
        policy(allow({"AWS": f"arn:aws-cn:iam::{B}:root"}, "kms:Decrypt")),
        (),
        {(f"arn:aws-cn:iam::{B}:root", "potential"): DECRYPT},
    ),
    Case(
        "§2.5",
        "service principal is reported as such",
        policy(allow({"Service": "logs.amazonaws.com"}, ["kms:Encrypt*", "kms:Decrypt*"])),
        (),
        {("logs.amazonaws.com", "potential"): {"kms:Encrypt", "kms:Decrypt"}},
    ),
    Case(
        "§2.5",
        "principals of the key's own account are never findings",
        policy(allow({"AWS": f"arn:aws:iam::{A}:role/Local"}, "kms:Decrypt")),
        (),
        {(f"arn:aws:iam::{A}:role/Local", "potential"): NONE},
    ),
    # §2.6 public
    Case(
        "§2.6",
        "Principal '*' without condition is public",
        policy(allow("*", "kms:Decrypt")),
        (),
        {("*", "public"): DECRYPT},
        {("*", "public"): False},
    ),
    Case(
        "§2.6",
        "{'AWS': '*'} is public, and delegable by any account's IAM",
        policy(allow({"AWS": "*"}, "kms:Decrypt")),
        (ROLE_ALL,),
        {("*", "public"): DECRYPT, (ROLE_B, "effective"): DECRYPT},
    ),
    Case(
        "§2.6",
        "Allow with NotPrincipal is public",
        {"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": ROOT_B}, "Action": "kms:Decrypt", "Resource": "*"}]},
        (),
        {("*", "public"): DECRYPT},
    ),
    # §2.7 conditions
    Case(
        "§2.7",
        "kms:ViaService confines nothing: public, conditional",
        policy(allow("*", "kms:Decrypt", {"StringEquals": {"kms:ViaService": "s3.us-west-2.amazonaws.com"}})),
        (),
        {("*", "public"): DECRYPT},
        {("*", "public"): True},
    ),
    Case(
        "§2.7",
        "'*' confined by kms:CallerAccount is potential for that account, not public",
        policy(allow("*", "kms:Decrypt", {"StringEquals": {"kms:CallerAccount": B}})),
        (ROLE_ALL,),
        {("*", "public"): NONE, (ROOT_B, "potential"): DECRYPT, (ROLE_B, "effective"): DECRYPT},
    ),
    Case(
        "§2.7",
        "condition key names are case-insensitive",
        policy(allow("*", "kms:Decrypt", {"StringEquals": {"kms:callerAccount": B}})),
        (),
        {("*", "public"): NONE, (ROOT_B, "potential"): DECRYPT},
    ),
    Case(
        "§2.7",
        "'*' confined to the caller's own account is no cross-account access",
        policy(allow("*", "kms:Decrypt", {"StringEquals": {"kms:CallerAccount": A}})),
        (ROLE_ALL,),
        {("*", "public"): NONE, (ROLE_B, "effective"): NONE},
    ),
    Case(
        "§3",
        "'*' confined to an organization nobody audits: one potential '*', conditional",
        policy(allow("*", "kms:Decrypt", {"StringEquals": {"aws:PrincipalOrgID": "o-unknown123"}})),
        (),
        {("*", "potential"): DECRYPT, ("*", "public"): NONE},
        {("*", "potential"): True},
    ),
    Case(
        "§2.7",
        "the org perimeter Deny is decided for a known organization",
        policy(
            allow("*", "kms:Decrypt"), deny("*", "kms:*", {"StringNotEquals": {"aws:PrincipalOrgID": "o-ourorg1234"}})
        ),
        (ROLE_ALL,),
        {("*", "public"): NONE, (ROLE_B, "effective"): DECRYPT},
        {(ROLE_B, "effective"): False},
        {"org": ORG},
    ),
    Case(
        "§2.7",
        "Allow with a false condition gives nothing (tag differs)",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:ResourceTag/env": "prod"}})),
        (),
        {(ROOT_B, "potential"): NONE},
        {},
        {"tags": (("env", "dev"),)},
    ),
    Case(
        "§2.7",
        "Allow with a true resource condition is unconditional",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:ResourceTag/Env": "prod"}})),
        (),
        {(ROOT_B, "potential"): DECRYPT},
        {(ROOT_B, "potential"): False},
        {"tags": (("env", "prod"),)},
    ),
    Case(
        "§2.7",
        "…IfExists is true when the key is absent",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEqualsIfExists": {"aws:ResourceTag/env": "prod"}})),
        (),
        {(ROOT_B, "potential"): DECRYPT},
        {(ROOT_B, "potential"): False},
    ),
    Case(
        "§2.7",
        "a negated operator is true when the key is absent",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringNotEquals": {"aws:ResourceTag/env": "prod"}})),
        (),
        {(ROOT_B, "potential"): DECRYPT},
        {(ROOT_B, "potential"): False},
    ),
    Case(
        "§2.7",
        "ForAllValues is true when the key is absent",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"ForAllValues:StringLike": {"kms:ResourceAliases": "alias/x*"}})),
        (),
        {(ROOT_B, "potential"): DECRYPT},
    ),
    Case(
        "§2.7",
        "ForAnyValue is false when the key is absent",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/x*"}})),
        (),
        {(ROOT_B, "potential"): NONE},
    ),
    Case(
        "§2.7",
        "ForAnyValue matches one alias of several",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/x*"}})),
        (),
        {(ROOT_B, "potential"): DECRYPT},
        {},
        {"aliases": ("alias/app", "alias/xyz")},
    ),
    Case(
        "§2.7",
        "keys in one block AND together: one false makes it false",
        policy(
            allow(
                {"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"kms:ViaService": "s3.x", "aws:ResourceAccount": C}}
            )
        ),
        (),
        {(ROOT_B, "potential"): NONE},
    ),
    Case(
        "§2.7",
        "values of one key OR together",
        policy(allow("*", "kms:Decrypt", {"StringEquals": {"aws:PrincipalAccount": [C, B]}})),
        (),
        {(ROOT_B, "potential"): DECRYPT, (f"arn:aws:iam::{C}:root", "potential"): DECRYPT, ("*", "public"): NONE},
    ),
    Case(
        "§2.7",
        "Deny with an undecided condition keeps access, conditional",
        policy(
            allow({"AWS": ROOT_B}, "kms:Decrypt"),
            deny({"AWS": ROOT_B}, "kms:Decrypt", {"Bool": {"aws:SecureTransport": "false"}}),
        ),
        (),
        {(ROOT_B, "potential"): DECRYPT},
        {(ROOT_B, "potential"): True},
    ),
    Case(
        "§2.7",
        "Deny with a true condition removes access",
        policy(
            allow({"AWS": ROOT_B}, "kms:Decrypt"),
            deny({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:PrincipalAccount": B}}),
        ),
        (),
        {(ROOT_B, "potential"): NONE},
    ),
    Case(
        "§2.7",
        "aws:PrincipalArn confining '*' names the role",
        policy(allow("*", "kms:Decrypt", {"ArnEquals": {"aws:PrincipalArn": ROLE_B}})),
        (ROLE_ALL, principal(OTHER_ROLE_B, iam_allow())),
        {
            (ROLE_B, "potential"): DECRYPT,
            (ROLE_B, "effective"): DECRYPT,
            (OTHER_ROLE_B, "effective"): NONE,
            ("*", "public"): NONE,
        },
    ),
    # §2.8 grants
    Case(
        "§2.8",
        "a grant to an external role is effective access without any policy",
        policy(),
        (),
        {(ROLE_B, "effective"): {"kms:Decrypt", "kms:Encrypt"}},
        {(ROLE_B, "effective"): False},
        {"grants": (Grant("g1", ROLE_B, ("Decrypt", "Encrypt")),)},
    ),
    Case(
        "§2.8",
        "encryption-context constraints make a grant conditional",
        policy(),
        (),
        {(ROLE_B, "effective"): DECRYPT},
        {(ROLE_B, "effective"): True},
        {"grants": (Grant("g1", ROLE_B, ("Decrypt",), constraints={"EncryptionContextSubset": {"a": "b"}}),)},
    ),
    Case(
        "§2.8",
        "a grant inside the key's account is not cross-account",
        policy(),
        (),
        {(f"arn:aws:iam::{A}:role/Local", "effective"): NONE},
        {},
        {"grants": (Grant("g1", f"arn:aws:iam::{A}:role/Local", ("Decrypt",)),)},
    ),
    Case(
        "§2.8",
        "an explicit Deny in the key policy beats a grant",
        policy(deny({"AWS": ROLE_B}, "kms:Decrypt")),
        (),
        {(ROLE_B, "effective"): {"kms:Encrypt"}},
        {},
        {"grants": (Grant("g1", ROLE_B, ("Decrypt", "Encrypt")),)},
    ),
    # §2.9 IAM side details
    Case(
        "§2.9",
        "IAM Resource wildcard over the key's account matches",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt")),
        (principal(ROLE_B, iam_allow("kms:Decrypt", f"arn:aws:kms:*:{A}:key/*")),),
        {(ROLE_B, "effective"): DECRYPT},
    ),
    Case(
        "§2.9",
        "an alias ARN in IAM Resource does not match the key",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt")),
        (principal(ROLE_B, iam_allow("kms:Decrypt", f"arn:aws:kms:us-west-2:{A}:alias/app")),),
        {(ROLE_B, "effective"): NONE},
    ),
    Case(
        "§2.9",
        "IAM Resource of another key does not match",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt")),
        (principal(ROLE_B, iam_allow("kms:Decrypt", KEY_ARN.replace("1234abcd", "9999abcd"))),),
        {(ROLE_B, "effective"): NONE},
    ),
    Case(
        "§2.9",
        "NotResource naming another key matches this one",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt")),
        (
            principal(
                ROLE_B,
                {
                    "Statement": [
                        {"Effect": "Allow", "Action": "kms:Decrypt", "NotResource": f"arn:aws:kms:*:{C}:key/*"}
                    ]
                },
            ),
        ),
        {(ROLE_B, "effective"): DECRYPT},
    ),
    Case(
        "§2.9",
        'NotResource "*" matches no key',
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt")),
        (principal(ROLE_B, {"Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "NotResource": "*"}]}),),
        {(ROLE_B, "effective"): set()},
    ),
    Case(
        "§2.9",
        "a permissions boundary must also allow",
        policy(allow({"AWS": ROOT_B})),
        (principal(ROLE_B, iam_allow("kms:*"), boundary=iam_allow("kms:Decrypt", "*")),),
        {(ROLE_B, "effective"): DECRYPT},
    ),
    # §3 zone of trust and severity
    Case(
        "§3",
        "a trusted account's access is low severity",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt")),
        (),
        {(ROOT_B, "potential"): DECRYPT},
        {},
        {"trusted": (B,)},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule} {c.name}" for c in CASES])
def test_rule(case: Case) -> None:
    evaluation = run(case.doc, *case.principals, **case.kwargs)
    for (who, access), wanted in case.expect.items():
        found = by(evaluation, who, access)
        got = set(found.actions) if found else set()
        assert got == wanted, f"{case.rule} {case.name}: {who} {access}: {sorted(got)} != {sorted(wanted)}"
    for (who, access), conditional in case.conditional.items():
        found = by(evaluation, who, access)
        assert found is not None and found.conditional is conditional, (case.name, found)


def test_severity_and_zone_follow_spec_section_3() -> None:
    ev = run(policy(allow("*", "kms:Decrypt")))
    public = by(ev, "*", "public")
    assert public and public.severity == "critical" and public.zone == "external"
    ev = run(policy(allow("*", "kms:Decrypt", {"StringEquals": {"kms:ViaService": "s3.x"}})))
    assert by(ev, "*", "public").severity == "high"  # type: ignore[union-attr]
    ev = run(policy(allow({"AWS": ROOT_B}, "kms:Decrypt")))
    assert by(ev, ROOT_B).severity == "high"  # type: ignore[union-attr]
    ev = run(policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"kms:ViaService": "s3.x"}})))
    assert by(ev, ROOT_B).severity == "medium"  # type: ignore[union-attr]
    ev = run(policy(allow({"AWS": ROOT_B}, "kms:Decrypt")), trusted=(B,))
    found = by(ev, ROOT_B)
    assert found and found.zone == "trusted" and found.severity == "low"
    ev = run(policy(allow({"AWS": ROOT_B}, "kms:Decrypt")), org=ORG)
    assert by(ev, ROOT_B).zone == "trusted"  # type: ignore[union-attr]


def test_undecided_conditions_are_listed_with_their_statement() -> None:
    ev = run(
        policy(
            allow("*", "kms:Decrypt", {"StringEquals": {"kms:ViaService": "s3.us-west-2.amazonaws.com"}}, Sid="ViaS3")
        )
    )
    found = by(ev, "*", "public")
    assert found is not None
    assert found.conditions == (
        {
            "source": "key-policy",
            "effect": "Allow",
            "sid": "ViaS3",
            "operator": "StringEquals",
            "key": "kms:ViaService",
            "values": ["s3.us-west-2.amazonaws.com"],
        },
    )


def test_grant_and_policy_paths_merge_into_one_effective_finding() -> None:
    ev = run(
        policy(allow({"AWS": ROOT_B}, "kms:Encrypt")),
        principal(ROLE_B, iam_allow("kms:Encrypt")),
        grants=(Grant("g1", ROLE_B, ("Decrypt",)),),
    )
    found = by(ev, ROLE_B, "effective")
    assert found is not None
    assert found.via == ("grant", "iam-policy", "key-policy")
    assert found.actions == ("kms:Decrypt", "kms:Encrypt")


def test_finding_ids_are_stable_and_distinct() -> None:
    doc = policy(allow({"AWS": [ROOT_B, f"arn:aws:iam::{C}:root"]}, "kms:Decrypt"))
    first, second = run(doc), run(doc)
    assert [f.id for f in first.findings] == [f.id for f in second.findings]
    assert len({f.id for f in first.findings}) == len(first.findings) == 2


def test_unparseable_key_policy_is_a_finding_not_an_exception() -> None:
    # SPEC §2.10: a document that cannot be parsed yields a finding of kind `unparseable`.
    ev = run("{this is not json", grants=(Grant("g1", ROLE_B, ("Decrypt",)),))
    bad = [f for f in ev.findings if f.kind == "unparseable"]
    assert len(bad) == 1 and bad[0].key_arn == KEY_ARN and bad[0].severity == "high"
    assert by(ev, ROLE_B, "effective") is not None  # grants are still evaluated


def test_scp_and_rcp_denies_remove_effective_access() -> None:
    doc = policy(allow({"AWS": ROOT_B}, ["kms:Decrypt", "kms:Encrypt"]))
    scp_deny = {
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"},
        ]
    }
    org = Organization(org_id="o-ourorg1234", accounts=frozenset({A, B}), scps={B: ((scp_deny,),)})
    ev = run(doc, ROLE_ALL, org=org)
    assert set(by(ev, ROLE_B, "effective").actions) == {"kms:Encrypt"}  # type: ignore[union-attr]
    rcp = {
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "kms:Encrypt",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "o-ourorg1234"}},
            },
        ]
    }
    org = Organization(org_id="o-ourorg1234", accounts=frozenset({A}), rcps={A: ((rcp,),)})
    ev = run(doc, ROLE_ALL, org=org)
    assert set(by(ev, ROLE_B, "effective").actions) == {"kms:Decrypt"}  # type: ignore[union-attr]


def test_potential_is_reported_for_accounts_that_are_not_audited() -> None:
    ev = run(policy(allow({"AWS": ROOT_B}, "kms:Decrypt")), principal(f"arn:aws:iam::{C}:role/R", iam_allow()))
    assert by(ev, ROOT_B, "potential") is not None
    assert not [f for f in ev.findings if f.access == "effective"]


def test_key_policy_statement_without_principal_applies_to_nobody() -> None:
    # 001_…txt: Principal is required in a key policy statement; without it nobody is allowed.
    doc = {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
    ev = run(doc, ROLE_ALL)
    assert [f for f in ev.findings if f.kind == "access"] == []
    assert "statement-without-principal" in [lint.kind for lint in ev.lints]


def test_principals_of_one_account_share_a_verdict_only_when_nothing_singles_them_out() -> None:
    # §2.2 and §2.7 together: a role named by ARN, and a PrincipalType condition, differ per principal.
    doc = policy(
        allow({"AWS": ROOT_B}, "kms:Encrypt"),
        allow({"AWS": ROLE_B}, "kms:Decrypt"),
        allow({"AWS": ROOT_B}, "kms:Sign", {"StringEquals": {"aws:PrincipalType": "User"}}),
    )
    ev = run(doc, ROLE_ALL, principal(OTHER_ROLE_B, iam_allow()), principal(USER_B, iam_allow()))
    assert set(by(ev, ROLE_B, "effective").actions) == {"kms:Encrypt", "kms:Decrypt"}  # type: ignore[union-attr]
    assert set(by(ev, OTHER_ROLE_B, "effective").actions) == {"kms:Encrypt"}  # type: ignore[union-attr]
    assert set(by(ev, USER_B, "effective").actions) == {"kms:Encrypt", "kms:Sign"}  # type: ignore[union-attr]
