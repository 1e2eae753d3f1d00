"""The condition-key presence table (SPEC §2.7), `NotPrincipal` with boundaries (§2.9) and
Deny-only confinement (§3): each case cites the rule and the AWS page that settles it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import (
    OTHER_ROLE_B,
    ROLE_B,
    ROOT_B,
    USE_ACTIONS,
    USE_EXPANDED,
    A,
    B,
    C,
    actions,
    allow,
    by,
    deny,
    iam_allow,
    policy,
    principal,
    run,
)

from kmsaudit.evaluator.actions import KMS_ACTIONS
from kmsaudit.evaluator.condkeys import TABLE, key_info
from kmsaudit.model import Organization

ORG = "o-ourorg1234"
ROOT_C = f"arn:aws:iam::{C}:root"
USER_ALICE = f"arn:aws:iam::{B}:user/alice"
USER_BOB = f"arn:aws:iam::{B}:user/bob"
GLOBAL_KEYS = 'IAM User Guide, "AWS global condition context keys"'


def public(ev):  # type: ignore[no-untyped-def]
    return by(ev, "*", "public")


def test_for_any_value_negated_deny_does_not_apply_to_an_outsider_in_no_organization() -> None:
    # §2.7 + GLOBAL_KEYS (aws:PrincipalOrgID: "included in the request context only if the principal
    # is a member of an organization"); IAM User Guide, "Multivalued context keys": ForAnyValue over
    # an absent key is false — so this Deny spares an outsider in no organization: public.
    doc = policy(
        allow("*", "kms:Decrypt"),
        deny("*", "kms:*", {"ForAnyValue:StringNotEquals": {"aws:PrincipalOrgID": ORG}}),
    )
    found = public(run(doc))
    assert found is not None and actions(found) == {"kms:Decrypt"} and not found.conditional
    # Without the set prefix the same Deny stops the outsider in no organization too (a negated
    # operator on an absent key is true), and one in any other organization.
    plain = policy(allow("*", "kms:Decrypt"), deny("*", "kms:*", {"StringNotEquals": {"aws:PrincipalOrgID": ORG}}))
    assert public(run(plain)) is None


def test_a_service_name_condition_admits_no_iam_caller() -> None:
    # §2.7 + GLOBAL_KEYS (aws:PrincipalServiceName: present only when an AWS service principal
    # calls): a "*" statement conditioned on it gives no IAM identity anything.
    doc = policy(allow("*", "kms:Decrypt", {"StringEquals": {"aws:PrincipalServiceName": "logs.amazonaws.com"}}))
    ev = run(doc, principal(ROLE_B, iam_allow()))
    assert public(ev) is None
    assert by(ev, ROLE_B, "effective") is None


def test_principal_arn_in_session_form_matches_no_caller() -> None:
    # §2.7 + GLOBAL_KEYS (aws:PrincipalArn: "For IAM roles, the request context returns the ARN of
    # the role, not the ARN of the user that assumed the role").
    session = f"arn:aws:sts::{B}:assumed-role/ExampleRole/*"
    doc = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"ArnLike": {"aws:PrincipalArn": session}}))
    ev = run(doc, principal(ROLE_B, iam_allow()))
    assert by(ev, ROOT_B, "potential") is None
    assert by(ev, ROLE_B, "effective") is None
    # The role's own ARN does match.
    doc = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"ArnLike": {"aws:PrincipalArn": ROLE_B}}))
    assert by(run(doc, principal(ROLE_B, iam_allow())), ROLE_B, "effective") is not None


def test_star_confined_to_named_accounts_by_a_deny_alone_is_their_potential_access() -> None:
    # §3: "whether the Allow's own condition or only a Deny that removes every other account
    # confines it" — both forms give the same potential findings, and neither is public.
    by_deny = policy(
        allow("*", "kms:Decrypt"),
        deny("*", "kms:*", {"StringNotEquals": {"aws:PrincipalAccount": [B, C]}}),
    )
    by_allow = policy(allow("*", "kms:Decrypt", {"StringEquals": {"aws:PrincipalAccount": [B, C]}}))
    for doc in (by_deny, by_allow):
        ev = run(doc)
        assert public(ev) is None
        for root in (ROOT_B, ROOT_C):
            found = by(ev, root, "potential")
            assert found is not None and actions(found) == {"kms:Decrypt"} and not found.conditional


def test_deny_with_not_principal_always_denies_a_principal_with_a_boundary() -> None:
    # §2.9 (IAM User Guide, "NotPrincipal": a Deny with NotPrincipal always denies a principal that
    # has a permissions boundary, whatever the NotPrincipal names).
    doc = policy(
        allow({"AWS": ROOT_B}, "kms:Decrypt"),
        {
            "Effect": "Deny",
            "NotPrincipal": {"AWS": [f"arn:aws:iam::{A}:root", ROOT_B, ROLE_B, OTHER_ROLE_B]},
            "Action": "kms:*",
            "Resource": "*",
        },
    )
    bounded = principal(ROLE_B, iam_allow(), boundary=iam_allow("kms:*", "*"))
    unbounded = principal(OTHER_ROLE_B, iam_allow())
    ev = run(doc, bounded, unbounded)
    assert by(ev, ROLE_B, "effective") is None
    assert actions(by(ev, OTHER_ROLE_B, "effective")) == {"kms:Decrypt"}


def test_username_is_absent_for_roles_and_decides_negated_operators() -> None:
    # §2.7 + GLOBAL_KEYS (aws:username: "requests that are made using ... IAM roles do not include
    # this key"): StringNotEquals on it is true for a role, decided for users.
    doc = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringNotEquals": {"aws:username": "alice"}}))
    ev = run(doc, principal(ROLE_B, iam_allow()), principal(USER_ALICE, iam_allow()), principal(USER_BOB, iam_allow()))
    role = by(ev, ROLE_B, "effective")
    assert role is not None and not role.conditional
    assert by(ev, USER_ALICE, "effective") is None
    bob = by(ev, USER_BOB, "effective")
    assert bob is not None and not bob.conditional


def test_principal_tags_come_from_authorization_details() -> None:
    # §2.7 + GLOBAL_KEYS (aws:PrincipalTag: present for a user or role with that tag attached). A
    # user's tags are all in its details; a role's session may carry session tags that override
    # them (IAM User Guide, "Passing session tags"): a role's tag condition stays undecided.
    doc = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:PrincipalTag/Team": "blue"}}))
    blue = principal(USER_ALICE, iam_allow(), tags=(("team", "blue"),))  # tag keys match case-insensitively
    plain = principal(USER_BOB, iam_allow())
    role = principal(ROLE_B, iam_allow(), tags=(("team", "red"),))
    ev = run(doc, blue, plain, role)
    found = by(ev, USER_ALICE, "effective")
    assert found is not None and not found.conditional
    assert by(ev, USER_BOB, "effective") is None
    assert by(ev, ROLE_B, "effective").conditional  # type: ignore[union-attr]
    assert by(ev, ROOT_B, "potential").conditional  # type: ignore[union-attr]  # any principal of B: undecided


def test_conditions_only_some_callers_meet_leave_star_public() -> None:
    # §3: the outsider is any user it likes (aws:username "bob"), a federated user, or — for
    # aws:PrincipalServiceName — any AWS service (§2.11: the confused deputy, potential "*").
    by_name = run(policy(allow("*", "kms:Decrypt", {"StringEquals": {"aws:username": "bob"}})))
    assert actions(public(by_name)) == {"kms:Decrypt"}
    federated = run(policy(allow("*", "kms:Decrypt", {"StringEquals": {"aws:PrincipalType": "FederatedUser"}})))
    assert actions(public(federated)) == {"kms:Decrypt"}
    service = {"StringEquals": {"aws:PrincipalServiceName": "cloudtrail.amazonaws.com"}}
    ev = run(policy(allow("*", "kms:Decrypt", service)))
    assert public(ev) is None  # no IAM identity has the key
    assert actions(by(ev, "*", "potential")) == {"kms:Decrypt"}
    assert "service-principal-unconfined" in [lint.kind for lint in ev.lints]


def test_resource_org_id_is_the_key_accounts_organization() -> None:
    # §2.7 + GLOBAL_KEYS (aws:ResourceOrgID: the organization of the account that owns the resource).
    org = Organization(org_id=ORG, accounts=frozenset({A}))
    ours = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:ResourceOrgID": ORG}}))
    theirs = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:ResourceOrgID": "o-other12345"}}))
    found = by(run(ours, principal(ROLE_B, iam_allow()), org=org), ROLE_B, "effective")
    assert found is not None and not found.conditional
    assert by(run(theirs, principal(ROLE_B, iam_allow()), org=org), ROLE_B, "effective") is None


def test_a_policy_variable_with_no_value_matches_nothing() -> None:
    # §2.7 + IAM User Guide, "Policy variables with no value": ${aws:username} for a role has no
    # value — StringEquals is false, StringNotEquals true.
    role = principal(ROLE_B, iam_allow())
    arn = f"arn:aws:iam::{B}:role/${{aws:username}}"
    eq = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:PrincipalArn": arn}}))
    ne = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringNotEquals": {"aws:PrincipalArn": arn}}))
    assert by(run(eq, role), ROLE_B, "effective") is None
    found = by(run(ne, role), ROLE_B, "effective")
    assert found is not None and not found.conditional
    # With a default (`${key, 'value'}`) the default stands in for the absent key.
    with_default = f"arn:aws:iam::{B}:role/${{aws:username, 'ExampleRole'}}"
    dflt = policy(allow({"AWS": ROOT_B}, "kms:Decrypt", {"StringEquals": {"aws:PrincipalArn": with_default}}))
    found = by(run(dflt, role), ROLE_B, "effective")
    assert found is not None and not found.conditional


def test_operation_bound_keys_are_absent_from_other_operations() -> None:
    # §2.7 + AWS KMS Developer Guide, "AWS KMS condition keys": kms:GrantIsForAWSResource is in
    # CreateGrant, ListGrants and RevokeGrant requests only — Bool on it is false for Decrypt.
    grant_ops = ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]
    doc = policy(allow({"AWS": ROOT_B}, [*USE_ACTIONS, *grant_ops], {"Bool": {"kms:GrantIsForAWSResource": "true"}}))
    found = by(run(doc), ROOT_B, "potential")
    assert found is not None and actions(found) == set(grant_ops) and found.conditional
    # kms:CallerAccount is in requests for every KMS key operation, RetireGrant included.
    doc = policy(allow("*", ["kms:Decrypt", "kms:RetireGrant"], {"StringEquals": {"kms:CallerAccount": B}}))
    assert actions(by(run(doc), ROOT_B, "potential")) == {"kms:Decrypt", "kms:RetireGrant"}


def test_console_default_policy_says_which_actions_the_grant_condition_bounds() -> None:
    # Issue #26 class 6: the console's key-users statements — use actions unconditional, the
    # grant actions only for AWS resources: one finding, `conditional_actions` the grant actions.
    grant_ops = ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]
    doc = policy(
        allow({"AWS": ROOT_B}, USE_ACTIONS),
        allow({"AWS": ROOT_B}, grant_ops, {"Bool": {"kms:GrantIsForAWSResource": "true"}}),
    )
    found = by(run(doc), ROOT_B, "potential")
    assert found is not None
    assert actions(found) == set(USE_EXPANDED) | set(grant_ops)
    assert not found.conditional and set(found.conditional_actions) == set(grant_ops)
    assert {c["key"] for c in found.conditions} == {"kms:GrantIsForAWSResource"}


EVALUATOR = Path(__file__).resolve().parents[2] / "kmsaudit" / "evaluator"
_KEY = re.compile(r"^(aws|kms):[A-Za-z0-9]+[/:]?$")


def test_every_condition_key_the_evaluator_names_is_in_the_table() -> None:
    # §2.7: "The evaluator keeps that as one table ... each row citing its documentation".
    named: set[str] = set()
    for path in EVALUATOR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _KEY.match(node.value):
                named.add(node.value.lower())
    assert len(named) > 20
    # "kms:EncryptionContext" names a grant's constraints in a finding's conditions (no key of its own).
    actions = {f"kms:{a}".lower() for a in KMS_ACTIONS}  # an action's name looks like a key: not one
    missing = sorted(k for k in named - {"kms:encryptioncontext"} - actions if key_info(k) is None and k not in TABLE)
    assert missing == []


def test_every_row_cites_its_page_and_says_its_presence() -> None:
    presences = {
        "always", "iam", "signed", "service", "service-source", "org", "resource-org", "tagged",
        "resource-tagged", "aliased", "key", "user", "temporary", "mfa", "via-service", "vpc",
        "not-vpc", "ec2", "chosen", "operation",
    }  # fmt: skip
    for name, info in TABLE.items():
        assert info.presence in presences, name
        assert info.decided in ("principal", "resource", "request"), name
        assert info.doc.startswith(("IAM User Guide", "AWS KMS Developer Guide")), name
        assert info.type in ("String", "ARN", "Bool", "Numeric", "Date", "IP", "Binary"), name
        assert (info.presence == "operation") <= (info.operations is not None), name
    # Both pages, whole: a sample of each.
    for key in ("aws:principalservicename", "aws:sourceorgpaths", "aws:resourceorgid", "kms:grantisforawsresource"):
        assert key in TABLE
    assert key_info("aws:principaltag/team") is TABLE["aws:principaltag/"]
    assert key_info("kms:encryptioncontext:app") is TABLE["kms:encryptioncontext:"]
    assert key_info("aws:nosuchkey") is None


def test_an_action_with_surrounding_whitespace_names_no_action() -> None:
    # §2.4: a pattern that matches no KMS action grants nothing — and denies nothing: a Deny on
    # "kms:Decrypt " does not hide the access the Allow gives (never stripped into a match).
    ev = run(policy(allow({"AWS": ROOT_B}, "kms:Decrypt"), deny({"AWS": ROOT_B}, "kms:Decrypt ")))
    assert actions(by(ev, ROOT_B, "potential")) == {"kms:Decrypt"}
    assert by(run(policy(allow({"AWS": ROOT_B}, "kms:Decrypt "))), ROOT_B, "potential") is None


def test_for_any_value_if_exists_over_an_absent_key_is_left_undecided() -> None:
    # §2.7: `…IfExists` is true over an absent key, `ForAnyValue:` false; the pages do not say which
    # wins when both qualify one operator, so the access is reported, conditional — never decided.
    doc = policy(
        allow({"AWS": ROOT_B}, "kms:Decrypt", {"ForAnyValue:StringEqualsIfExists": {"aws:PrincipalServiceName": "x"}})
    )
    found = by(run(doc, principal(ROLE_B, iam_allow())), ROLE_B, "effective")
    assert found is not None and found.conditional
