"""Property tests (hypothesis): the evaluator never raises, Deny wins, Allow only adds."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from helpers import KEY_ARN, A, B, C, principal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmsaudit.evaluator import AuditScope, clear_caches, evaluate_keys
from kmsaudit.evaluator.actions import KMS_ACTIONS, pattern_mask
from kmsaudit.evaluator.match import wildcard_match
from kmsaudit.evaluator.memo import Memo
from kmsaudit.model import Grant, KeyRecord, Organization

ACCOUNTS = [A, B, C, "123456789012"]
principals_st = st.one_of(
    st.just("*"),
    st.builds(
        lambda a: {"AWS": a},
        st.sampled_from(
            [
                "*",
                *ACCOUNTS,
                *[f"arn:aws:iam::{x}:root" for x in ACCOUNTS],
                f"arn:aws:iam::{B}:role/R",
                f"arn:aws:iam::{C}:user/U",
                f"arn:aws:sts::{B}:assumed-role/R/s",
                "AROAABCDEFGHIJKLMNOP",
            ]
        ),
    ),
    st.builds(lambda s: {"Service": s}, st.sampled_from(["logs.amazonaws.com", "*"])),
)
actions_st = st.sampled_from(
    [
        "kms:*",
        "*",
        "kms:Decrypt",
        "kms:ReEncrypt*",
        "kms:",
        "kms:Get*",
        "s3:*",
        "kms:ScheduleKeyDeletion",
        "KMS:ENCRYPT",
        "kms:?ecrypt",
    ]
)
condition_st = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(
            [
                "StringEquals",
                "StringNotEquals",
                "StringLike",
                "ForAnyValue:StringLike",
                "ForAllValues:StringEquals",
                "StringEqualsIfExists",
                "ArnLike",
                "Bool",
                "Null",
                "NumericLessThan",
                "IpAddress",
                "Bogus",
            ]
        ),
        st.dictionaries(
            st.sampled_from(
                [
                    "kms:CallerAccount",
                    "aws:PrincipalAccount",
                    "aws:PrincipalOrgID",
                    "kms:ViaService",
                    "aws:ResourceTag/env",
                    "aws:PrincipalArn",
                    "kms:ResourceAliases",
                    "aws:SourceIp",
                ]
            ),
            st.one_of(
                st.sampled_from([*ACCOUNTS, "o-x", "*", "true", "prod"]),
                st.lists(st.sampled_from([*ACCOUNTS, "alias/*"]), max_size=3),
            ),
            min_size=1,
            max_size=2,
        ),
        min_size=1,
        max_size=2,
    ),
)


@st.composite
def statements(draw: Any, effect: str | None = None) -> dict[str, Any]:
    stmt: dict[str, Any] = {
        "Effect": effect or draw(st.sampled_from(["Allow", "Deny"])),
        draw(st.sampled_from(["Principal", "Principal", "NotPrincipal"])): draw(principals_st),
        draw(st.sampled_from(["Action", "Action", "NotAction"])): draw(
            st.one_of(actions_st, st.lists(actions_st, max_size=3))
        ),
        "Resource": "*",
    }
    cond = draw(condition_st)
    if cond:
        stmt["Condition"] = cond
    return stmt


json_st = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Statement",
                    "Effect",
                    "Principal",
                    "Action",
                    "Resource",
                    "Condition",
                    "AWS",
                    "NotAction",
                    "StringEquals",
                    "x",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=30,
)

IAM = [
    principal(f"arn:aws:iam::{B}:role/R", {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}),
    principal(
        f"arn:aws:iam::{C}:user/U", {"Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY_ARN}]}
    ),
]
SCOPE = AuditScope(IAM)


def _evaluate(doc: Any, grants: tuple[Grant, ...] = ()):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return evaluate_keys([KeyRecord(KEY_ARN, A, "us-west-2", "k", text, grants=grants)], SCOPE)


def _access(ev: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in ev.findings:
        if f.kind == "access":
            out.setdefault(f.principal, set()).update(f.actions)
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_st, st.text(max_size=200), st.lists(statements(), max_size=6).map(lambda s: {"Statement": s})))
def test_arbitrary_documents_never_raise(doc: Any) -> None:
    ev = _evaluate(doc)
    for f in ev.findings:
        assert f.severity in ("low", "medium", "high", "critical")


@settings(max_examples=200)
@given(st.lists(statements(), max_size=6))
def test_unconditional_deny_of_everything_to_everyone_leaves_no_access(stmts: list[dict[str, Any]]) -> None:
    doc = {"Statement": [*stmts, {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}
    grants = (Grant("g", f"arn:aws:iam::{B}:role/R", ("Decrypt",)),)
    assert _access(_evaluate(doc, grants)) == {}


@settings(max_examples=200)
@given(st.lists(statements(), max_size=6), statements(effect="Allow"))
def test_adding_an_allow_never_removes_access(stmts: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    before = _access(_evaluate({"Statement": stmts}))
    after = _access(_evaluate({"Statement": [*stmts, extra]}))
    for who, acts in before.items():
        assert acts <= after.get(who, set()), (who, acts, after.get(who))


def _reference_match(pattern: str, text: str) -> bool:
    """A deliberately naive recursive matcher to check the regex translation against."""
    if not pattern:
        return not text
    if pattern[0] == "*":
        return _reference_match(pattern[1:], text) or (bool(text) and _reference_match(pattern, text[1:]))
    if text and (pattern[0] == "?" or pattern[0] == text[0]):
        return _reference_match(pattern[1:], text[1:])
    return False


@settings(max_examples=500)
@given(st.text(alphabet="ab*?.[]\\", max_size=8), st.text(alphabet="ab.[]\\", max_size=8))
def test_wildcards_agree_with_a_reference(pattern: str, text: str) -> None:
    assert wildcard_match(pattern, text) == _reference_match(pattern, text)


@settings(max_examples=300)
@given(st.text(alphabet="kmsKMS:*?DecryptGnat", max_size=14))
def test_action_masks_agree_with_a_reference(pattern: str) -> None:
    mask = pattern_mask(pattern)
    expected = 0
    service, sep, name = pattern.lower().partition(":")
    for i, action in enumerate(KMS_ACTIONS):
        if pattern.strip() == "*" or (
            sep and _reference_match(service, "kms") and _reference_match(name, action.lower())
        ):
            expected |= 1 << i
    assert mask == expected, (pattern, re.escape(pattern))


# Callers of every shape the cross-key caches distinguish (issue #2): Resource by pattern and by
# exact ARN, conditions on the key itself (tags, key spec, `${…}`), a boundary, SCPs and RCPs.
KEY_ARNS = [
    f"arn:aws:kms:{region}:{account}:key/k{i}"
    for i, (account, region) in enumerate(
        [(A, "us-west-2"), (A, "eu-west-1"), (C, "us-west-2"), (A, "us-west-2"), (C, "eu-west-1")]
    )
]
ESTATE_IAM = [
    principal(f"arn:aws:iam::{B}:role/R", {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}),
    principal(
        f"arn:aws:iam::{B}:role/Tagged",
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:Encrypt"],
                    "Resource": f"arn:aws:kms:*:{A}:key/*",
                    "Condition": {"StringEquals": {"aws:ResourceTag/env": "prod"}},
                }
            ]
        },
    ),
    principal(
        f"arn:aws:iam::{C}:user/U",
        {"Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": [KEY_ARNS[0], KEY_ARNS[3]]}]},
        boundary={"Statement": [{"Effect": "Allow", "Action": "kms:*", "NotResource": KEY_ARNS[3]}]},
    ),
    principal(
        f"arn:aws:iam::{C}:role/Spec",
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "kms:*",
                    "Resource": "arn:aws:kms:us-west-2:*",
                    "Condition": {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}},
                },
                {
                    "Effect": "Deny",
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:KeySpec": "${aws:PrincipalTag/spec}"}},
                },
            ]
        },
    ),
]
# Every key policy starts alike, so that keys share verdicts (what the caches key on): C may
# use the keys; B may encrypt with those tagged env=prod (a condition on the key itself).
SHARED_STATEMENTS = [
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{C}:root"}, "Action": "kms:*", "Resource": "*"},
    {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
        "Action": "kms:Encrypt",
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:ResourceTag/env": "prod"}},
    },
]
ESTATE_ORG = Organization(
    "o-x",
    frozenset({A, B}),
    scps={B: (({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},),)},
    rcps={
        C: (
            (
                {
                    "Statement": [
                        {
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "kms:Encrypt",
                            "Resource": "*",
                            "Condition": {"StringEquals": {"aws:ResourceTag/env": "dev"}},
                        }
                    ]
                },
            ),
        )
    },
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(statements(), min_size=1, max_size=4), min_size=2, max_size=5),
    st.lists(st.sampled_from(["prod", "dev", None]), min_size=5, max_size=5),
    st.randoms(use_true_random=False),
)
def test_a_keys_findings_do_not_depend_on_the_other_keys_of_the_scan(
    policies: list[list[dict[str, Any]]], envs: list[str | None], rnd: Any
) -> None:
    """SPEC §2: a key is decided by its own policy and grants and by its callers' IAM. The
    verdicts kmsaudit caches across the keys of a scan must never carry one key's answer to
    another: one scope for all keys, a fresh scope per key, and another order agree."""
    keys = [
        KeyRecord(
            KEY_ARNS[i],
            KEY_ARNS[i].split(":")[4],
            KEY_ARNS[i].split(":")[3],
            f"k{i}",
            json.dumps({"Statement": [*SHARED_STATEMENTS, *stmts]}),
            key_spec=("SYMMETRIC_DEFAULT", "RSA_2048")[i % 2],
            tags=(("env", envs[i]),) if envs[i] else (),
            grants=(Grant(f"g{i}", f"arn:aws:iam::{B}:role/R", ("Decrypt",)),) if i % 2 else (),
        )
        for i, stmts in enumerate(policies)
    ]

    def scope() -> AuditScope:
        return AuditScope(ESTATE_IAM, organization=ESTATE_ORG)

    together = evaluate_keys(keys, scope())
    alone = [f for key in keys for f in evaluate_keys([key], scope()).findings]
    assert list(together.findings) == alone
    reordered = keys[:]
    rnd.shuffle(reordered)
    shuffled = evaluate_keys(reordered, scope())
    assert sorted(map(repr, shuffled.findings)) == sorted(map(repr, alone))


def test_cache_limits_bound_memory_not_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cache across keys has a size limit (a daemon scans estates of any size); reaching
    it forgets entries and must not change a single finding (issue #2)."""
    stmts = [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{B}:root"}, "Action": "kms:Decrypt", "Resource": "*"},
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "o-x"}},
        },
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["kms:Encrypt", "kms:Decrypt"],
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:CallerAccount": C, "kms:ViaService": "s3.us-west-2.amazonaws.com"}},
        },
    ]
    keys = [
        KeyRecord(
            arn,
            arn.split(":")[4],
            arn.split(":")[3],
            f"k{i}",
            json.dumps({"Statement": [*SHARED_STATEMENTS, *stmts[: 1 + i % 3]]}),
            tags=(("env", ("prod", "dev")[i % 2]),),
            grants=(Grant(f"g{i}", f"arn:aws:iam::{B}:role/R", ("Decrypt",)),),
        )
        for i, arn in enumerate(KEY_ARNS * 3)
    ]
    expected = evaluate_keys(keys, AuditScope(ESTATE_IAM, organization=ESTATE_ORG))
    assert expected.findings

    def forget_everything(self: Memo, key: Any, value: Any) -> None:  # a limit of one entry
        dict.clear(self)
        dict.__setitem__(self, key, value)

    monkeypatch.setattr(Memo, "__setitem__", forget_everything)
    clear_caches()
    limited = evaluate_keys(keys, AuditScope(ESTATE_IAM, organization=ESTATE_ORG))
    assert limited == expected
