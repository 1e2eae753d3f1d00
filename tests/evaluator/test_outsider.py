"""Issue #12: public is decided against an outsider of the attacker's choosing (SPEC §3);
`Null` on keys every request carries, `aws:Source*` absent for direct callers (§2.7); AWS
service principals and grants to them (§2.8, §2.11). One case per rule, the rule in its id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import ROLE_B, ROOT_B, A, B, C, allow, deny, iam_allow, policy, principal, run
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kmsaudit.evaluator.access import Subject, evaluate_statements
from kmsaudit.evaluator.actions import CROSS_ACCOUNT_MASK, names
from kmsaudit.evaluator.conditions import Context
from kmsaudit.evaluator.policy import parse_policy
from kmsaudit.model import Evaluation, Finding, Grant, Organization

DECRYPT = {"kms:Decrypt"}
ORG = Organization(org_id="o-ourorg1234", accounts=frozenset({A, B}))
ROOT_C = f"arn:aws:iam::{C}:root"
LOGS = "logs.amazonaws.com"
RDS = "rds.us-east-1.amazonaws.com"
ANY = "*"


def at(ev: Evaluation, who: str, access: str, account: str | None = None) -> Finding | None:
    hits = [
        f
        for f in ev.findings
        if f.principal == who and f.access == access and (account is None or f.principal_account == account)
    ]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


@dataclass
class Case:
    rule: str
    name: str
    doc: Any
    # (principal, access, principal_account or None) -> (actions, conditional or None); None: absent
    expect: dict[tuple[str, str, str | None], tuple[set[str], bool | None] | None]
    kwargs: dict[str, Any] = field(default_factory=dict)
    lints: tuple[str, ...] = ()  # lint kinds that must be present
    no_lints: tuple[str, ...] = ()  # and absent


def public(doc_condition: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    return policy(allow("*", "kms:Decrypt", doc_condition), *more)


CASES = [
    # SPEC §3: the outsider picks its account, role name and path, organization, tags.
    Case(
        "§3",
        "ArnLike aws:PrincipalArn on any account's role/backup-* is public: anyone can name a role so",
        public({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/backup-*"}}),
        {("*", "public", "*"): (DECRYPT, False), ("*", "potential", None): None},
    ),
    Case(
        "§3",
        "ForAllValues:StringEquals aws:PrincipalOrgID is public: the key is absent outside an organization",
        public({"ForAllValues:StringEquals": {"aws:PrincipalOrgID": "o-partner123"}}),
        {("*", "public", "*"): (DECRYPT, False), ("*", "potential", None): None},
    ),
    Case(
        "§3",
        "Null aws:PrincipalOrgID false is public: an organization of its own has an id",
        public({"Null": {"aws:PrincipalOrgID": "false"}}),
        {("*", "public", "*"): (DECRYPT, False)},
    ),
    Case(
        "§3",
        "StringLike aws:PrincipalOrgID o-* is public",
        public({"StringLike": {"aws:PrincipalOrgID": "o-*"}}),
        {("*", "public", "*"): (DECRYPT, False)},
        {"org": ORG},
    ),
    Case(
        "§3",
        "StringLike kms:CallerAccount * is public",
        public({"StringLike": {"kms:CallerAccount": "*"}}),
        {("*", "public", "*"): (DECRYPT, False)},
    ),
    Case(
        "§3",
        "an ARN pattern pinned to one account is potential for that account, not public",
        public({"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{B}:role/*"}}),
        {("*", "public", None): None, ("*", "potential", None): None, (ROOT_B, "potential", B): (DECRYPT, None)},
    ),
    Case(
        "§3",
        "a pinned account AND an any-account ARN pattern: that account only",
        public(
            {
                "StringEquals": {"aws:PrincipalAccount": B},
                "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/backup-*"},
            }
        ),
        {("*", "public", None): None, ("*", "potential", None): None, (ROOT_B, "potential", B): (DECRYPT, None)},
    ),
    Case(
        "§3",
        "StringEquals kms:CallerAccount to named accounts: potential for each, not public",
        public({"StringEquals": {"kms:CallerAccount": [B, C]}}),
        {
            ("*", "public", None): None,
            (ROOT_B, "potential", B): (DECRYPT, False),
            (ROOT_C, "potential", C): (DECRYPT, False),
        },
    ),
    Case(
        "§3",
        "confined to one organization nobody audits: one potential '*', conditional, the condition listed",
        public({"StringEquals": {"aws:PrincipalOrgID": "o-partner123"}}),
        {("*", "public", None): None, ("*", "potential", "*"): (DECRYPT, True)},
    ),
    Case(
        "§3",
        "confined to the audited organization: potential for its accounts (trusted), not public",
        public({"StringEquals": {"aws:PrincipalOrgID": "o-ourorg1234"}}),
        {("*", "public", None): None, ("*", "potential", None): None, (ROOT_B, "potential", B): (DECRYPT, False)},
        {"org": ORG},
    ),
    Case(
        "§3",
        "a trusted account is no outsider: kms:CallerAccount pinned to it is its potential access",
        public({"StringEquals": {"kms:CallerAccount": C}}),
        {("*", "public", None): None, (ROOT_C, "potential", C): (DECRYPT, False)},
        {"trusted": (C,)},
    ),
    Case(
        "§3",
        "an account pattern admitting unnamed accounts is public",
        public({"StringLike": {"aws:PrincipalAccount": "4444555566*"}}),
        {("*", "public", "*"): (DECRYPT, False)},
    ),
    Case(
        "§3",
        "Deny unless ArnLike role/trusted-*: the outsider names its role trusted-x, public",
        policy(
            allow("*", "kms:Decrypt"),
            deny("*", "kms:Decrypt", {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/trusted-*"}}),
        ),
        {("*", "public", "*"): (DECRYPT, False)},
    ),
    Case(
        "§3",
        "Deny every account but named ones: no outsider gets through",
        policy(
            allow("*", "kms:Decrypt"),
            deny("*", "kms:*", {"StringNotEquals": {"aws:PrincipalAccount": [A, B]}}),
        ),
        {("*", "public", None): None},
    ),
    Case(
        "§3",
        "the same role pattern allowed and denied: one outsider cannot be both, not public",
        policy(
            allow("*", "kms:Decrypt", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/backup-*"}}),
            deny("*", "kms:Decrypt", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/backup-*"}}),
        ),
        {("*", "public", None): None},
    ),
    Case(
        "§3",
        "backup-* allowed, admin-* denied: the outsider is backup-x, public",
        policy(
            allow("*", "kms:Decrypt", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/backup-*"}}),
            deny("*", "kms:Decrypt", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin-*"}}),
        ),
        {("*", "public", "*"): (DECRYPT, False)},
    ),
    Case(
        "§3",
        "two patterns on the ARN AND together: a role named a-…-reader satisfies both, public",
        public(
            {
                "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/a-*"},
                "StringLike": {"aws:PrincipalArn": "*-reader"},
            }
        ),
        {("*", "public", "*"): (DECRYPT, False)},
    ),
    Case(
        "§3",
        "aws:PrincipalType and the outsider's own tags are its choice: public",
        public({"StringEquals": {"aws:PrincipalType": "AssumedRole", "aws:PrincipalTag/team": "backup"}}),
        {("*", "public", "*"): (DECRYPT, False)},
    ),
    Case(
        "§3",
        "request conditions are set in the outsider's favour: public, conditional",
        public(
            {"StringEquals": {"kms:ViaService": "s3.us-west-2.amazonaws.com"}, "Bool": {"aws:SecureTransport": "true"}}
        ),
        {("*", "public", "*"): (DECRYPT, True)},
    ),
    Case(
        "§3",
        "kms:CallerAccount pinned to the key's own account: no cross-account finding at all",
        public({"StringEquals": {"kms:CallerAccount": A, "kms:ViaService": "ec2.us-west-2.amazonaws.com"}}),
        {("*", "public", None): None, ("*", "potential", None): None},
    ),
    Case(
        "§3",
        "the org perimeter Deny (organization not audited) leaves that organization's members: potential '*'",
        policy(
            allow("*", "kms:Decrypt", {"StringEquals": {"kms:ViaService": "s3.us-west-2.amazonaws.com"}}),
            deny("*", "kms:*", {"StringNotEquals": {"aws:PrincipalOrgID": "o-partner123"}}),
        ),
        {("*", "public", None): None, ("*", "potential", "*"): (DECRYPT, True)},
    ),
    # SPEC §2.7: Null on keys every signed request carries is decided.
    Case(
        "§2.7",
        "Null aws:PrincipalArn true allows nobody",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"Null": {"aws:PrincipalArn": "true"}})),
        {(ROOT_B, "potential", None): None},
    ),
    Case(
        "§2.7",
        "Null aws:PrincipalArn false is always true: unconditional",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"Null": {"aws:PrincipalArn": "false"}})),
        {(ROOT_B, "potential", B): (DECRYPT, False)},
    ),
    Case(
        "§2.7",
        "Null aws:PrincipalType and kms:CallerAccount true allow nobody",
        policy(
            allow({"AWS": ROOT_B}, "kms:Decrypt", {"Null": {"aws:PrincipalType": "true", "kms:CallerAccount": "true"}})
        ),
        {(ROOT_B, "potential", None): None},
    ),
    Case(
        "§2.7",
        "aws:SourceAccount is absent when a role calls directly: an AWS principal confined by it gets nothing",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:SourceAccount": B}})),
        {(ROOT_B, "potential", None): None},
    ),
    Case(
        "§2.7",
        "…IfExists on aws:SourceArn is true when a role calls directly",
        policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"ArnLikeIfExists": {"aws:SourceArn": f"arn:aws:s3:::{B}-*"}})),
        {(ROOT_B, "potential", B): (DECRYPT, False)},
    ),
    # SPEC §2.11: service principals.
    Case(
        "§2.11",
        "a service principal with no confinement: the lint and a potential '*' finding",
        policy(allow({"Service": LOGS}, ["kms:Encrypt*", "kms:Decrypt*"])),
        {(LOGS, "potential", "*"): ({"kms:Encrypt", "kms:Decrypt"}, False)},
        lints=("service-principal-unconfined",),
    ),
    Case(
        "§2.11",
        "a service principal confined by aws:SourceAccount to the key's account: nothing cross-account",
        policy(allow({"Service": LOGS}, "kms:Decrypt", {"StringEquals": {"aws:SourceAccount": A}})),
        {(LOGS, "potential", None): None},
        no_lints=("service-principal-unconfined",),
    ),
    Case(
        "§2.11",
        "confined by aws:SourceArn to the key's account: nothing cross-account",
        policy(
            allow({"Service": LOGS}, "kms:Decrypt", {"ArnLike": {"aws:SourceArn": f"arn:aws:logs:us-west-2:{A}:*"}})
        ),
        {(LOGS, "potential", None): None},
        no_lints=("service-principal-unconfined",),
    ),
    Case(
        "§2.11",
        "confined by kms:CallerAccount and kms:ViaService, as AWS-managed key policies are",
        policy(
            allow(
                {"Service": LOGS},
                "kms:Decrypt",
                {"StringEquals": {"kms:CallerAccount": A, "kms:ViaService": "logs.us-west-2.amazonaws.com"}},
            )
        ),
        {(LOGS, "potential", None): None},
    ),
    Case(
        "§2.11",
        "confined to an external account: potential for that account, the service as principal",
        policy(allow({"Service": LOGS}, "kms:Decrypt", {"StringEquals": {"aws:SourceAccount": [A, B]}})),
        {(LOGS, "potential", B): (DECRYPT, False), (LOGS, "potential", "*"): None},
        no_lints=("service-principal-unconfined",),
    ),
    Case(
        "§2.11",
        "aws:SourceArn with any account is no confinement",
        policy(allow({"Service": LOGS}, "kms:Decrypt", {"ArnLike": {"aws:SourceArn": "arn:aws:logs:*:*:*"}})),
        {(LOGS, "potential", "*"): (DECRYPT, False)},
        lints=("service-principal-unconfined",),
    ),
    Case(
        "§2.11",
        "confined by aws:SourceOrgID to the audited organization: its other accounts, trusted",
        policy(allow({"Service": LOGS}, "kms:Decrypt", {"StringEquals": {"aws:SourceOrgID": "o-ourorg1234"}})),
        {(LOGS, "potential", B): (DECRYPT, False), (LOGS, "potential", "*"): None},
        {"org": ORG},
    ),
    Case(
        "§2.11",
        'Principal "*" that only admits services, unconfined: the confused deputy is reported',
        public({"Bool": {"aws:PrincipalIsAWSService": "true"}}),
        {("*", "public", None): None, ("*", "potential", "*"): (DECRYPT, False)},
        lints=("service-principal-unconfined",),
    ),
    # SPEC §2.8: grants to AWS service principals act for the account that issued them.
    Case(
        "§2.8",
        "a service grant issued by the key's account is a lint, not a finding",
        policy(),
        {(RDS, "effective", None): None},
        {"grants": (Grant("g1", RDS, ("Decrypt", "GenerateDataKey"), issuing_account=f"arn:aws:iam::{A}:root"),)},
        lints=("service-grant",),
    ),
    Case(
        "§2.8",
        "a service grant with no IssuingAccount reported is taken as the key's own (a lint says so)",
        policy(),
        {(RDS, "effective", None): None},
        {"grants": (Grant("g1", RDS, ("Decrypt",)),)},
        lints=("service-grant",),
    ),
    Case(
        "§2.8",
        "a service grant issued by another account is that account's effective access",
        policy(),
        {(RDS, "effective", B): ({"kms:Decrypt"}, False)},
        {"grants": (Grant("g1", RDS, ("Decrypt",), issuing_account=B),)},
        no_lints=("service-grant",),
    ),
    Case(
        "§2.8",
        "a grant to another account's role stays effective",
        policy(),
        {(ROLE_B, "effective", B): ({"kms:Decrypt"}, False)},
        {"grants": (Grant("g1", ROLE_B, ("Decrypt",), issuing_account=A),)},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule} {c.name}" for c in CASES])
def test_rule(case: Case) -> None:
    ev = run(case.doc, **case.kwargs)
    for (who, access, account), wanted in case.expect.items():
        found = at(ev, who, access, account)
        if wanted is None:
            assert found is None, f"{case.name}: unexpected {found}"
            continue
        actions, conditional = wanted
        assert found is not None, f"{case.name}: no {access} finding for {who} ({account}) in {ev.findings}"
        assert set(found.actions) == actions, (case.name, found)
        if conditional is not None:
            assert found.conditional is conditional, (case.name, found)
    kinds = {lint.kind for lint in ev.lints}
    for kind in case.lints:
        assert kind in kinds, (case.name, ev.lints)
    for kind in case.no_lints:
        assert kind not in kinds, (case.name, ev.lints)


def test_public_is_critical_and_external_whatever_identity_keys_it_names() -> None:
    # SPEC §4 severity: public unconditional is critical, even behind a role-name pattern.
    ev = run(public({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/backup-*"}}))
    found = at(ev, "*", "public")
    assert found is not None and found.severity == "critical" and found.zone == "external"


def test_a_service_grant_from_another_account_is_external_and_high() -> None:
    ev = run(policy(), grants=(Grant("g1", RDS, ("Decrypt",), issuing_account=f"arn:aws:iam::{C}:root"),))
    found = at(ev, RDS, "effective", C)
    assert found is not None and found.zone == "external" and found.severity == "high" and found.via == ("grant",)


def test_one_service_confined_to_two_external_accounts_gives_two_findings_with_distinct_ids() -> None:
    ev = run(policy(allow({"Service": LOGS}, "kms:Decrypt", {"StringEquals": {"aws:SourceAccount": [B, C]}})))
    found = [f for f in ev.findings if f.principal == LOGS]
    assert {f.principal_account for f in found} == {B, C}
    assert len({f.id for f in found}) == 2


def test_effective_access_through_a_backup_pattern_is_still_computed_for_audited_roles() -> None:
    # The outsider decides `public`; audited principals are still decided one by one (§2.1).
    doc = public({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/backup-*"}})
    backup = f"arn:aws:iam::{B}:role/backup-nightly"
    ev = run(doc, principal(backup, iam_allow("kms:Decrypt")), principal(ROLE_B, iam_allow("kms:Decrypt")))
    assert at(ev, backup, "effective") is not None
    assert at(ev, ROLE_B, "effective") is None


# -- properties (hypothesis) ------------------------------------------------------------------
# Statements whose conditions an outsider may or may not satisfy: identity keys of every kind the
# outsider chooses (SPEC §3), and a request key.
_ARN_PATTERNS = [
    "arn:aws:iam::*:role/backup-*",
    "arn:aws:iam::*:role/*",
    f"arn:aws:iam::{B}:role/*",
    "*-reader",
    "arn:aws:iam::*:user/*",
    "arn:aws:iam::9*:role/*",
]
_CONDITIONS = st.sampled_from(
    [
        ("ArnLike", "aws:PrincipalArn", _ARN_PATTERNS),
        ("StringLike", "aws:PrincipalArn", _ARN_PATTERNS),
        ("StringLike", "kms:CallerAccount", [B, "*", "0*", "9*"]),
        ("StringEquals", "aws:PrincipalAccount", [B, C]),
        ("StringLike", "aws:PrincipalOrgID", ["o-ourorg1234", "o-*", "o-zz*"]),
        ("ForAllValues:StringLike", "aws:PrincipalOrgID", ["o-ourorg1234", "o-zz*"]),
        ("StringEquals", "aws:PrincipalType", ["AssumedRole", "User"]),
        ("StringLike", "aws:PrincipalTag/team", ["backup", "b*"]),
        ("StringLike", "kms:ViaService", ["s3.*.amazonaws.com"]),
    ]
)
_NEGATED = {"ArnLike": "ArnNotLike", "StringLike": "StringNotLike", "StringEquals": "StringNotEquals"}


@st.composite
def _condition(draw: Any, negate: bool = False) -> dict[str, Any]:
    operator, key, pool = draw(_CONDITIONS)
    values = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))
    if negate and operator in _NEGATED:
        operator = _NEGATED[operator]
    return {operator: {key: values}}


@st.composite
def _wild(draw: Any, effect: str) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    for block in draw(st.lists(_condition(negate=effect == "Deny" and draw(st.booleans())), max_size=2)):
        for operator, keys in block.items():
            conditions.setdefault(operator, {}).update(keys)
    stmt: dict[str, Any] = {
        "Effect": effect,
        "Principal": "*",
        "Action": draw(st.sampled_from(["kms:Decrypt", ["kms:Decrypt", "kms:Encrypt"], "kms:*"])),
        "Resource": "*",
    }
    if conditions:
        stmt["Condition"] = conditions
    return stmt


_POLICIES = st.builds(
    lambda allows, denies: policy(*allows, *denies),
    st.lists(_wild("Allow"), min_size=1, max_size=2),
    st.lists(_wild("Deny"), max_size=2),
)


def _public(doc: dict[str, Any]) -> Finding | None:
    return at(run(doc, org=ORG), "*", "public")


def _sure(f: Finding) -> set[str]:
    return set() if f.conditional else set(f.actions) - set(f.conditional_actions)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_POLICIES, st.data())
def test_a_wider_condition_value_never_lowers_public(doc: dict[str, Any], data: Any) -> None:
    """SPEC §3: replacing a value of an Allow's `…Like`/`Arn…` condition by "*" admits more
    outsiders, so what was public stays public (at least as many actions, at least as sure)."""
    before = _public(doc)
    assume(before is not None)
    assert before is not None
    slots = [
        (i, operator, key)
        for i, stmt in enumerate(doc["Statement"])
        if stmt["Effect"] == "Allow"
        for operator, keys in stmt.get("Condition", {}).items()
        if operator.endswith("Like") and "Not" not in operator
        for key in keys
    ]
    assume(slots)
    i, operator, key = data.draw(st.sampled_from(slots))
    wider = json.loads(json.dumps(doc))
    values = wider["Statement"][i]["Condition"][operator][key]
    values[data.draw(st.integers(0, len(values) - 1))] = "*"
    after = _public(wider)
    assert after is not None, (doc, wider)
    assert set(before.actions) <= set(after.actions) and _sure(before) <= _sure(after), (before, after)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_POLICIES)
def test_pinning_the_caller_to_the_keys_account_removes_public(doc: dict[str, Any]) -> None:
    """SPEC §3: `StringEquals kms:CallerAccount <the key's account>` on every "*" Allow leaves
    nothing an outsider can satisfy."""
    assume(_public(doc) is not None)
    pinned = json.loads(json.dumps(doc))
    for stmt in pinned["Statement"]:
        if stmt["Effect"] == "Allow" and stmt["Principal"] == "*":
            stmt.setdefault("Condition", {}).setdefault("StringEquals", {})["kms:CallerAccount"] = A
    assert _public(pinned) is None


_OUTSIDER_ACCOUNTS = ["000000000001", "900000000009", "012345678901"]
_OUTSIDER_NAMES = ["role/backup-x", "role/backup-reader", "role/plain", "user/alice-reader", "root"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _POLICIES,
    st.sampled_from(_OUTSIDER_ACCOUNTS),
    st.sampled_from(_OUTSIDER_NAMES),
    st.sampled_from([None, "o-zzabc12345", "o-other12345"]),
    st.sampled_from([None, "backup", "other"]),
)
def test_no_statement_set_an_outsider_satisfies_is_reported_below_public(
    doc: dict[str, Any], account: str, name: str, org: str | None, team: str | None
) -> None:
    """SPEC §3: take one concrete outsider (an account outside the zone, a role or user name of
    its choosing, its own organization or none, its tags); whatever the key policy lets it do,
    the evaluator's public finding must include, as surely."""
    arn = f"arn:aws:iam::{account}:{name}"
    kind = name.split("/", 1)[0]
    context = {
        "aws:principalaccount": (account,),
        "kms:calleraccount": (account,),
        "aws:principalarn": (arn,),
        "aws:principaltype": ({"role": "AssumedRole", "user": "User", "root": "Account"}[kind],),
        "aws:principalisawsservice": ("false",),
        "aws:principalorgid": (org,) if org else None,
        "aws:principalorgpaths": (f"{org}/r-ab12/",) if org else None,
        "aws:principaltag/team": (team,) if team else None,
        "aws:sourceaccount": None,
        "aws:sourcearn": None,
        "aws:sourceorgid": None,
    }
    if kind == "user":
        context["aws:username"] = (name.split("/")[1],)
    statements = parse_policy(json.dumps(doc)).statements
    subject = Subject("outsider", "*", account, arn=arn, context=context)
    reference = evaluate_statements(statements, subject, Context(context, {"aws:resourceaccount": (A,)}), "key-policy")
    reference = reference.restrict(CROSS_ACCOUNT_MASK)
    assume(reference.any)
    found = _public(doc)
    assert found is not None, (doc, arn, org, team)
    assert set(names(reference.any)) <= set(found.actions), (doc, arn, found)
    assert set(names(reference.sure)) <= _sure(found), (doc, arn, found)


def test_a_principal_an_allow_admits_and_no_deny_stops_makes_the_key_public() -> None:
    """SPEC §3 (found by the property above): the Allow admits any account's `role/backup-*`, the
    Deny stops everyone but account 444455556666's roles and `*-reader`. An outsider's
    `role/backup-reader` is admitted and escapes the Deny: public. Its candidate must satisfy the
    Allow's pattern and the Deny's escape together, not each alone."""
    doc = policy(
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"ArnLike": {"aws:PrincipalArn": ["arn:aws:iam::*:role/backup-*"]}},
        },
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::444455556666:role/*", "*-reader"]}},
        },
    )
    found = _public(doc)
    assert found is not None and found.actions == ("kms:Decrypt",) and not found.conditional
    # and with the escape narrowed to the partner's roles only, nothing outside is left
    doc["Statement"][-1]["Condition"]["ArnNotLike"]["aws:PrincipalArn"] = ["arn:aws:iam::444455556666:role/*"]
    assert _public(doc) is None
