"""SPEC §5, issue #14: KMS returns the same key policy in a new order and layout on every call;
the canonical form is the same for every such reordering, and differs for any other change."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmsaudit.drift import policy_hash
from kmsaudit.evaluator.policy import canonical_policy

values = st.sampled_from(
    ["kms:Decrypt", "kms:Encrypt", "kms:*", "*", "arn:aws:kms:*:111122223333:key/*", "o-abc", "444455556666"]
)
value_lists = st.lists(values, min_size=1, max_size=4)
principals = st.one_of(
    st.just("*"),
    st.dictionaries(st.sampled_from(["AWS", "Service"]), st.one_of(values, value_lists), min_size=1, max_size=2),
)
conditions = st.dictionaries(
    st.sampled_from(["StringEquals", "StringLike", "ArnLike", "ForAnyValue:StringLike"]),
    st.dictionaries(
        st.sampled_from(["kms:CallerAccount", "aws:PrincipalArn", "kms:ViaService"]),
        st.one_of(values, value_lists),
        min_size=1,
        max_size=3,
    ),
    max_size=2,
)


@st.composite
def statement(draw: Any) -> dict[str, Any]:
    stmt: dict[str, Any] = {
        "Sid": draw(st.sampled_from(["", "Admin", "Use", "Grants"])),
        "Effect": draw(st.sampled_from(["Allow", "Deny"])),
        draw(st.sampled_from(["Principal", "NotPrincipal"])): draw(principals),
        draw(st.sampled_from(["Action", "NotAction"])): draw(st.one_of(values, value_lists)),
        draw(st.sampled_from(["Resource", "NotResource"])): draw(st.one_of(values, value_lists)),
    }
    cond = draw(conditions)
    if cond:
        stmt["Condition"] = cond
    return stmt


policies = st.builds(
    lambda statements, pid: {"Version": "2012-10-17", "Id": pid, "Statement": statements},
    st.lists(statement(), min_size=1, max_size=5),
    st.sampled_from(["key-default-1", "auto-ebs-2"]),
)


def reorder(doc: Any, rnd: random.Random, path: tuple[str, ...] = ()) -> Any:
    """What KMS does: shuffle statements, set-like lists and object keys."""
    if isinstance(doc, dict):
        items = [(k, reorder(v, rnd, (*path, k))) for k, v in doc.items()]
        rnd.shuffle(items)
        return dict(items)
    if isinstance(doc, list):
        items = [reorder(v, rnd, path) for v in doc]
        rnd.shuffle(items)  # every list in a key policy is a set: statements and values alike
        return items
    return doc


def kms_text(doc: Any) -> str:
    return json.dumps(doc, indent=2, separators=(",", " : "))  # KMS's own layout


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(policies, st.randoms(use_true_random=False))
def test_any_reordering_has_the_same_canonical_text_and_hash(doc: dict[str, Any], rnd: random.Random) -> None:
    original = canonical_policy(json.dumps(doc))
    reordered = canonical_policy(kms_text(reorder(doc, rnd)))
    assert reordered == original
    assert policy_hash(reordered) == policy_hash(original)


def _mutations(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every string value in the document."""
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _mutations(v, (*path, k))]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _mutations(v, (*path, i))]
    return [path] if isinstance(doc, str) else []


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(policies, st.data())
def test_changing_any_value_changes_the_canonical_text(doc: dict[str, Any], data: Any) -> None:
    path = data.draw(st.sampled_from(_mutations(doc)))
    changed = json.loads(json.dumps(doc))
    target = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = target[path[-1]] + "-changed"
    assert canonical_policy(json.dumps(changed)) != canonical_policy(json.dumps(doc))


def test_text_that_is_not_a_policy_object_is_kept_raw() -> None:
    for text in ("{not json", "[1, 2]", '"a string"', ""):
        assert canonical_policy(text) == text
    assert canonical_policy(None) is None
