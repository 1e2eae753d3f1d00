"""SPEC §4 `explanation` and `remediation` (issue #27): why a finding exists, and the verified
smallest changes that remove it. tests/explaincheck.py checks the promises on any key without
trusting the code that makes them; helpers.run applies it to every evaluator test case."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from explaincheck import check_explained
from helpers import (
    KEY_ARN,
    ROLE_B,
    ROOT_A,
    ROOT_B,
    USE_ACTIONS,
    A,
    B,
    C,
    allow,
    deny,
    iam_allow,
    key,
    policy,
    principal,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmsaudit.evaluator import AuditScope
from kmsaudit.evaluator.canonical import pretty_policy
from kmsaudit.evaluator.policy import canonical_policy
from kmsaudit.evaluator.remedy import explain_and_remedy
from kmsaudit.model import Grant, Organization

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from evaluator import build_estate
from test_properties import IAM, statements

ROOT_C = f"arn:aws:iam::{C}:root"


def explained(doc: Any, *principals: Any, **scope_args: Any) -> dict[tuple[str, str], tuple[Any, list, list]]:
    grants = scope_args.pop("grants", ())
    scope = AuditScope(principals, **scope_args)
    record = key(doc, grants=grants)
    check_explained(record, scope)
    return {(f.principal, f.access): (f, e, r) for f, e, r in explain_and_remedy(record, scope)}


def parts(elements: list[dict[str, Any]]) -> dict[Any, str]:
    return {(e["source"], e["statement"]): e["part"] for e in elements}


def test_the_statement_that_grants_is_named_with_its_line_in_the_history_text() -> None:
    # SPEC §4: "statement": Sid or index, "line": the line in the canonical text `history` prints.
    doc = policy(allow({"AWS": ROOT_B}, USE_ACTIONS, Sid="PartnerUse"))
    _, elements, _ = explained(doc)[(ROOT_B, "potential")]
    (element,) = elements
    assert element | {"conditions": []} == {
        "source": "key-policy",
        "name": "default",
        "statement": "PartnerUse",
        "line": element["line"],
        "effect": "Allow",
        "part": "grants",
        "conditions": [],
    }
    lines = pretty_policy(canonical_policy(json.dumps(doc))).splitlines()
    block = lines[element["line"] - 1 :]
    assert block[0].strip() == "{"
    end = block.index("    },") if "    }," in block else block.index("    }")
    assert '      "Sid": "PartnerUse"' in block[:end]


def test_parts_say_what_each_statement_does_for_this_principal() -> None:
    # SPEC §4 parts: a Deny that takes actions away `confines`; a Deny over the same actions
    # that spares this principal `denies-others`; an Allow on an open condition is `undecided`.
    doc = policy(
        allow({"AWS": [ROOT_B, ROOT_C]}, USE_ACTIONS, Sid="Use"),
        deny({"AWS": ROOT_B}, "kms:Encrypt"),
        deny({"AWS": ROOT_C}, "kms:Decrypt"),
        allow({"AWS": ROOT_B}, "kms:CreateGrant", {"Bool": {"kms:GrantIsForAWSResource": "true"}}, Sid="Grants"),
    )
    found = explained(doc)
    f, elements, _ = found[(ROOT_B, "potential")]
    assert "kms:Encrypt" not in f.actions and "kms:CreateGrant" in f.conditional_actions
    by_part = parts(elements)
    assert by_part[("key-policy", "Use")] == "grants"
    assert by_part[("key-policy", "Grants")] == "undecided"
    deny_b = next(e for e in elements if e["effect"] == "Deny" and e["part"] == "confines")
    deny_c = next(e for e in elements if e["effect"] == "Deny" and e["part"] == "denies-others")
    assert deny_b["statement"] != deny_c["statement"]
    grants = next(e for e in elements if e["statement"] == "Grants")
    assert grants["conditions"] == [
        {"operator": "Bool", "key": "kms:GrantIsForAWSResource", "values": ["true"], "open": True}
    ]


def test_effective_access_names_the_iam_statement_and_the_boundary() -> None:
    # SPEC §2.1: key policy ∧ identity policy ∧ boundary; each named with its policy and statement.
    role = principal(ROLE_B, iam_allow(["kms:Decrypt", "kms:Encrypt"]), boundary=iam_allow("kms:Decrypt"))
    f, elements, remediation = explained(policy(allow({"AWS": ROOT_B}, USE_ACTIONS, Sid="Use")), role)[
        (ROLE_B, "effective")
    ]
    assert f.actions == ("kms:Decrypt",)
    assert [(e["source"], e["name"], e["statement"], e["part"]) for e in elements] == [
        ("key-policy", "default", "Use", "grants"),
        ("iam-policy", "inline:p0", 0, "grants"),
        ("permissions-boundary", "boundary", 0, "grants"),
    ]
    assert elements[1]["line"] == 4  # the statement's "{" in the document as stored, indented by 2
    iam_fix = next(r for r in remediation if r["kind"] == "iam-policy")
    # A new inline policy of the role's own: the one that grants may be AWS-managed, or shared.
    assert iam_fix["verified"] is True and iam_fix["statement"] == 0 and iam_fix["policy"].startswith("KmsAuditDeny-")
    assert json.loads(iam_fix["iam_policy"])["Statement"] == [
        {"Effect": "Deny", "Action": ["kms:Decrypt"], "Resource": KEY_ARN}
    ]
    assert iam_fix["command"].startswith(
        f"aws iam put-role-policy --role-name ExampleRole --policy-name {iam_fix['policy']} "
    )


def test_an_scp_that_allows_is_part_of_the_explanation() -> None:
    org = Organization(
        "o-abc",
        frozenset({A, B}),
        scps={B: ((json.dumps({"Statement": [{"Sid": "All", "Effect": "Allow", "Action": "*", "Resource": "*"}]}),),)},
    )
    role = principal(ROLE_B, iam_allow("kms:Decrypt"))
    _, elements, _ = explained(policy(allow({"AWS": ROOT_B}, "kms:Decrypt")), role, organization=org)[
        (ROLE_B, "effective")
    ]
    assert ("scp", "All") in parts(elements)


def test_a_grant_is_explained_and_revoking_it_is_the_verified_fix() -> None:
    # SPEC §2.8: a grant gives access with no policy; the fix is `aws kms revoke-grant`.
    grant = Grant("g-1", f"arn:aws:iam::{C}:role/Reader", ("Decrypt",))
    f, elements, remediation = explained(policy(), grants=(grant,))[(f"arn:aws:iam::{C}:role/Reader", "effective")]
    assert [(e["source"], e["name"], e["part"]) for e in elements] == [("grant", "g-1", "grants")]
    assert remediation == [
        {
            "kind": "grant",
            "summary": f"revoke grant g-1 ({f.principal})",
            "grant_id": "g-1",
            "command": f"aws kms revoke-grant --key-id {KEY_ARN} --grant-id g-1",
            "verified": True,
            "also_changes": [],
        }
    ]


def test_public_access_is_fixed_by_confining_the_star_statement_to_the_organization() -> None:
    # Issue #27: "add a confining condition (the organization, the audited accounts) to a '*' statement".
    org = Organization("o-abc", frozenset({A, B}))
    doc = policy(allow("*", "kms:Decrypt", Sid="Open"))
    _, _, remediation = explained(doc, organization=org)[("*", "public")]
    first = remediation[0]
    revised = json.loads(first["key_policy"])
    # What "*" gave every outsider, member account B keeps, now shown as its own (trusted) finding.
    after = explain_and_remedy(key(revised), AuditScope(organization=org))
    assert [(f.principal, f.zone, f.actions) for f, _, _ in after] == [(ROOT_B, "trusted", ("kms:Decrypt",))]
    assert first["verified"] and first["also_changes"] == [after[0][0].id]
    open_stmt = next(s for s in revised["Statement"] if s.get("Sid") == "Open")
    assert open_stmt["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}
    assert any(s.get("Principal") == {"AWS": ROOT_A} for s in revised["Statement"])  # administration kept


def test_taking_one_partner_out_keeps_the_other_and_lists_what_else_changes() -> None:
    doc = policy(allow({"AWS": [ROOT_B, ROOT_C]}, USE_ACTIONS, Sid="Use"))
    role = principal(ROLE_B, iam_allow("kms:Decrypt"))
    found = explained(doc, role)
    _root_b, _, remediation = found[(ROOT_B, "potential")]
    first = remediation[0]
    assert first["summary"] == f'take {ROOT_B} out of statement "Use"'
    use = next(s for s in json.loads(first["key_policy"])["Statement"] if s.get("Sid") == "Use")
    assert use["Principal"] == {"AWS": [ROOT_C]}
    # B's role loses its access too: the change says so (it is B's administrators' delegation).
    assert first["also_changes"] == [found[(ROLE_B, "effective")][0].id]


def test_an_unreadable_key_policy_is_explained_not_remedied() -> None:
    (f, elements, remediation), *_ = explain_and_remedy(key("{not json"), AuditScope())
    assert f.kind == "unparseable" and elements[0]["part"] == "undecided" and remediation == []


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_the_promises_hold_for_generated_policies(data: Any) -> None:
    stmts = data.draw(st.lists(statements(), max_size=5))
    scope = AuditScope(IAM, trusted_accounts=(C,))
    check_explained(key(policy(*stmts)), scope)


def test_the_promises_hold_on_a_generated_estate_of_1000_keys() -> None:
    # Issue #27 acceptance: every finding explained, every key-policy finding offered a fix, every
    # key-policy fix re-evaluated here and found to remove it, keep the rest and the administration.
    keys, principals = build_estate(1000, 200, 500, seed=11)
    scope = AuditScope(principals)
    checked = sum(check_explained(record, scope) for record in keys)
    assert checked > 1000


def test_the_same_access_by_another_path_is_not_removed_by_cutting_one(tmp_path: Path) -> None:
    # Review of issue #27: a finding's id names its path; cutting the key-policy path while a grant
    # gives the same actions only renames the finding. Only a change that ends the access verifies.
    role = principal(ROLE_B, iam_allow("kms:Decrypt"))
    grant = Grant("grant-1", ROLE_B, ("Decrypt",))
    f, _, remediation = explained(policy(allow({"AWS": ROLE_B}, "kms:Decrypt", Sid="Role")), role, grants=(grant,))[
        (ROLE_B, "effective")
    ]
    assert set(f.via) == {"grant", "iam-policy", "key-policy"}
    assert [r["kind"] for r in remediation] == ["iam-policy"]  # the deny reaches the grant too


def test_a_change_never_removes_an_administrator_of_the_keys_own_account() -> None:
    # SPEC §4: "never locks the account out": here the account's Admin role, not its root, administers.
    admin_and_partner = allow({"AWS": [f"arn:aws:iam::{A}:role/Admin", ROOT_B]}, "kms:*", Sid="AdminAndPartner")
    doc = {"Version": "2012-10-17", "Statement": [admin_and_partner]}
    _, _, remediation = explained(doc)[(ROOT_B, "potential")]
    assert [r["summary"] for r in remediation] == [f'take {ROOT_B} out of statement "AdminAndPartner"']
    org_admin = allow("*", "kms:*", {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}, Sid="OrgAdmin")
    for _, _, fixes in explained({"Version": "2012-10-17", "Statement": [org_admin]}).values():
        assert all("remove statement" not in r["summary"] for r in fixes)
