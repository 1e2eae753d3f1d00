"""SPEC §5, pure: drift between two scope states."""

from __future__ import annotations

from typing import Any

from kmsaudit.drift import ScopeState, diff_scope

K1, K2 = "arn:aws:kms:us-east-1:111122223333:key/k1", "arn:aws:kms:us-east-1:111122223333:key/k2"
P = "arn:aws:iam::444455556666:root"


def f(
    key: str = K1,
    principal: str = P,
    actions: tuple[str, ...] = ("kms:Decrypt",),
    *,
    access: str = "potential",
    conditional: bool = False,
    kind: str = "access",
    severity: str = "high",
    account: str = "444455556666",
    via: tuple[str, ...] = ("key-policy",),
) -> dict[str, Any]:
    return {
        "id": f"{key}{principal}{access}",
        "kind": kind,
        "key_arn": key,
        "principal": principal,
        "principal_account": account,
        "access": access,
        "actions": list(actions),
        "conditional": conditional,
        "conditional_actions": list(actions) if conditional else [],
        "severity": severity,
        "via": list(via),
    }


def state(*findings: dict[str, Any], keys: dict[str, str] | None = None) -> ScopeState:
    policies = [(k, v) for k, v in (keys if keys is not None else {K1: "p1"}).items()]
    return ScopeState.build(findings, policies)


def kinds(before: ScopeState | None, after: ScopeState) -> list[tuple[str, str]]:
    return [(e.kind, e.severity) for e in diff_scope("111122223333", "us-east-1", before, after)]


def test_first_scan_is_a_baseline() -> None:
    assert kinds(None, state(f())) == []


def test_each_kind_of_change() -> None:
    assert kinds(state(), state(f())) == [("added", "high")]
    assert kinds(state(f()), state()) == [("removed", "low")]
    assert kinds(state(f()), state(f(actions=("kms:Decrypt", "kms:Encrypt")))) == [("widened", "high")]
    assert kinds(state(f(actions=("kms:Decrypt", "kms:Encrypt"))), state(f())) == [("narrowed", "low")]
    assert kinds(state(f(conditional=True)), state(f())) == [("widened", "high")]  # a condition dropped
    assert kinds(state(f()), state(f(), keys={K1: "p2"})) == [("policy-changed", "low")]
    assert kinds(state(f()), state(f(), keys={K1: "p1", K2: "q"})) == [("key-created", "low")]
    assert kinds(state(f(), f(K2), keys={K1: "p1", K2: "q"}), state(f())) == [
        ("key-deleted", "low")
    ]  # not also "removed"
    assert kinds(state(f()), state(f())) == []


def test_a_policy_change_that_changes_access_is_reported_as_the_access_change() -> None:
    assert kinds(state(), state(f(), keys={K1: "p2"})) == [("added", "high")]


def test_an_unreadable_policy_is_not_access_removed() -> None:
    unreadable = f(principal="*", access="unknown", kind="unparseable", actions=())
    assert kinds(state(f()), state(unreadable, keys={K1: ""})) == [("added", "high")]  # the unparseable one


def test_effective_access_carries_over_when_the_principals_iam_failed() -> None:
    eff = f(principal="arn:aws:iam::444455556666:role/R", access="effective", via=("iam-policy", "key-policy"))
    before = state(f(), eff)
    now = state(f()).carry(before, {"444455556666"})
    assert kinds(before, now) == []
    assert kinds(before, state(f()).carry(before, set())) == [("removed", "low")]
    assert state(f(), eff).digest() == now.digest()


def test_one_service_acting_for_two_accounts_is_two_findings_in_the_stored_state() -> None:
    # SPEC §2.11: a service principal confined to two external accounts is one finding per account;
    # the scope's state must keep both, and a third account is one `added` event.
    logs = "logs.amazonaws.com"
    b, c = f(principal=logs, account="444455556666"), f(principal=logs, account="777788889999")
    assert len(state(b, c).findings) == 2
    assert kinds(state(b), state(b, c)) == [("added", "high")]


def test_an_unreadable_key_keeps_its_findings_and_is_said_once() -> None:
    """SPEC §5: one key that cannot be read keeps its last good state and gives one
    key-unreadable event (not one per scan), then key-readable when it recovers."""
    good = state(f(), f(principal="arn:aws:iam::777788889999:root", account="777788889999"))
    marker = f(principal="*", access="unknown", kind="unparseable", actions=(), account="*")
    blind = ScopeState.build([marker], [(K1, None)], unreadable=[(K1, "aws-error")]).carry(good, set())
    assert set(blind.findings) > set(good.findings)  # every finding kept, and the marker
    assert blind.keys == good.keys  # its policy hash too: no policy-changed
    assert kinds(good, blind) == [("key-unreadable", "medium")]
    still = ScopeState.build([marker], [(K1, None)], unreadable=[(K1, "aws-error")]).carry(blind, set())
    assert kinds(blind, still) == [] and still.digest() == blind.digest()  # nothing new while it lasts
    assert kinds(still, good) == [("key-readable", "low")]  # and no added/removed either way
