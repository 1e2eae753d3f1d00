"""The seeds' own example policies (../shared/seeds), evaluated as the documents describe."""

from __future__ import annotations

import json
import re

from helpers import KEY_ARN, ROLE_B, ROOT_B, USE_EXPANDED, USER_B, B, by, principal, run, seed, seed_json_blocks

from kmsaudit.evaluator import AuditScope, evaluate_keys, principals_from_authorization_details
from kmsaudit.model import IamPrincipal, KeyRecord, PolicyDocument

GRANTS = {"kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"}


def _complete_example_001() -> dict:
    return next(b for b in seed_json_blocks("001") if b.get("Id") == "key-consolepolicy-2")


def test_001_complete_example_gives_account_444455556666_use_and_grants_for_aws_resources() -> None:
    # 001_…txt "Example key policy": 444455556666 may use the key, and manage grants only
    # when kms:GrantIsForAWSResource is true (a request-time condition: conditional).
    ev = run(_complete_example_001())
    found = by(ev, ROOT_B, "potential")
    assert found is not None
    assert set(found.actions) == USE_EXPANDED | GRANTS
    assert set(found.conditional_actions) == GRANTS
    assert found.conditional is False  # the use statement has no condition
    assert {c["key"] for c in found.conditions} == {"kms:GrantIsForAWSResource"}
    # Local admins and users are in the key's own account: no finding for them.
    assert {f.principal for f in ev.findings} == {ROOT_B}


def test_001_example_with_iam_in_the_external_account_is_effective() -> None:
    role = principal(
        ROLE_B,
        {"Statement": [{"Effect": "Allow", "Action": ["kms:Decrypt", "kms:ScheduleKeyDeletion"], "Resource": KEY_ARN}]},
    )
    ev = run(_complete_example_001(), role)
    found = by(ev, ROLE_B, "effective")
    assert found is not None and found.actions == ("kms:Decrypt",)  # ScheduleKeyDeletion never crosses
    assert found.via == ("iam-policy", "key-policy")
    # SPEC §3: an audited account is inside the zone of trust.
    assert found.zone == "trusted" and found.severity == "low"


def _statements_003() -> list[dict]:
    blocks = seed_json_blocks("003")
    return [b for b in blocks if "Effect" in b]


def test_003_step1_and_step2_together_give_effective_access() -> None:
    stmts = _statements_003()
    key_stmt = next(s for s in stmts if s.get("Principal") == {"AWS": [ROOT_B]})
    iam_stmt = next(s for s in stmts if s.get("Sid") == "AllowUseOfKeyInAccount111122223333")
    assert iam_stmt["Resource"] == KEY_ARN  # the seed's own key ARN
    role = principal(ROLE_B, {"Version": "2012-10-17", "Statement": [iam_stmt]})
    ev = run({"Statement": [key_stmt]}, role)
    assert set(by(ev, ROLE_B, "effective").actions) == USE_EXPANDED  # type: ignore[union-attr]
    # Step 1 alone ("Neither the key policy nor the IAM policy alone is sufficient"):
    ev = run({"Statement": [key_stmt]}, principal(ROLE_B))
    assert by(ev, ROLE_B, "effective") is None and by(ev, ROOT_B, "potential") is not None


def test_003_named_users_and_roles_restrict_what_iam_can_delegate() -> None:
    stmts = _statements_003()
    named = next(s for s in stmts if s.get("Principal") == {"AWS": [ROLE_B, USER_B]})
    iam_doc = {"Statement": [next(s for s in stmts if s.get("Sid") == "AllowUseOfKeyInAccount111122223333")]}
    other = f"arn:aws:iam::{B}:role/SomebodyElse"
    ev = run({"Statement": [named]}, principal(ROLE_B, iam_doc), principal(USER_B, iam_doc), principal(other, iam_doc))
    assert by(ev, ROLE_B, "effective") and by(ev, USER_B, "effective")
    assert by(ev, other, "effective") is None  # "If an IAM policy gives … other external users … no effect"
    assert by(ev, ROOT_B, "potential") is None


def test_003_console_statements_grant_management_only_for_aws_resources() -> None:
    stmts = _statements_003()
    console = [s for s in stmts if s.get("Principal") == {"AWS": ROOT_B}]
    assert len(console) == 2
    ev = run({"Statement": console})
    found = by(ev, ROOT_B, "potential")
    assert found is not None and set(found.conditional_actions) == GRANTS


def _cli_example_002() -> str:
    text = seed("002")
    start = text.index("Contents of ``key_policy.json``::")
    body = text[start : text.index("To identify the CMK")]
    return body[body.index("{") : body.rindex("}") + 1]


def test_002_cli_example_with_malformed_kms_actions_never_crashes_and_is_linted() -> None:
    doc = _cli_example_002()
    assert '"kms:"' in doc
    key = KeyRecord(arn=KEY_ARN, account="111122223333", region="us-west-2", key_id="k", policy=doc)
    ev = evaluate_keys([key], AuditScope())
    assert ev.findings == ()  # every principal is the key's own account
    kinds = [lint.kind for lint in ev.lints]
    assert "action-matches-nothing" in kinds
    # The output shown in 002_…txt has "kms:Describe" and "kms:List": they match nothing either.
    output = text_after = seed("002")[seed("002").index("Output::") :]
    doc2 = text_after[text_after.index("{") : text_after.rindex("}") + 1]
    assert "kms:Describe" in output
    key2 = KeyRecord(arn=KEY_ARN, account="111122223333", region="us-west-2", key_id="k", policy=doc2)
    ev2 = evaluate_keys([key2], AuditScope())
    nothing = [lint for lint in ev2.lints if lint.kind == "action-matches-nothing"]
    assert {re.search(r"'(.*)'", lint.message).group(1) for lint in nothing} == {  # type: ignore[union-attr]
        "kms:",
        "kms:Describe",
        "kms:List",
    }


def test_authorization_details_resolve_groups_managed_default_versions_and_boundaries() -> None:
    details = {
        "UserDetailList": [
            {
                "UserName": "ExampleUser",
                "Arn": USER_B,
                "GroupList": ["Crypto"],
                "UserPolicyList": [],
                "AttachedManagedPolicies": [],
            }
        ],
        "GroupDetailList": [
            {
                "GroupName": "Crypto",
                "Arn": f"arn:aws:iam::{B}:group/Crypto",
                "GroupPolicyList": [
                    {
                        "PolicyName": "g",
                        "PolicyDocument": "%7B%22Statement%22%3A%5B%7B%22Effect%22%3A"
                        "%22Allow%22%2C%22Action%22%3A%22kms%3AEncrypt%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D",
                    }
                ],
                "AttachedManagedPolicies": [],
            }
        ],
        "RoleDetailList": [
            {
                "RoleName": "ExampleRole",
                "Arn": ROLE_B,
                "RolePolicyList": [],
                "AttachedManagedPolicies": [{"PolicyName": "Use", "PolicyArn": f"arn:aws:iam::{B}:policy/Use"}],
                "PermissionsBoundary": {
                    "PermissionsBoundaryType": "Policy",
                    "PermissionsBoundaryArn": f"arn:aws:iam::{B}:policy/Boundary",
                },
            }
        ],
        "Policies": [
            {
                "PolicyName": "Use",
                "Arn": f"arn:aws:iam::{B}:policy/Use",
                "DefaultVersionId": "v2",
                "PolicyVersionList": [
                    {
                        "VersionId": "v1",
                        "IsDefaultVersion": False,
                        "Document": {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]},
                    },
                    {
                        "VersionId": "v2",
                        "IsDefaultVersion": True,
                        "Document": {
                            "Statement": [
                                {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt"], "Resource": "*"}
                            ]
                        },
                    },
                ],
            },
            {
                "PolicyName": "Boundary",
                "Arn": f"arn:aws:iam::{B}:policy/Boundary",
                "DefaultVersionId": "v1",
                "PolicyVersionList": [
                    {
                        "VersionId": "v1",
                        "IsDefaultVersion": True,
                        "Document": json.dumps(
                            {"Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}
                        ),
                    }
                ],
            },
        ],
    }
    principals = principals_from_authorization_details(details, B)
    assert {p.arn for p in principals} == {USER_B, ROLE_B}
    doc = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": ROOT_B}, "Action": "kms:*", "Resource": "*"}]}
    ev = evaluate_keys([KeyRecord(KEY_ARN, "111122223333", "us-west-2", "k", json.dumps(doc))], AuditScope(principals))
    assert by(ev, USER_B, "effective").actions == ("kms:Encrypt",)  # type: ignore[union-attr]  # group, URL-encoded
    assert by(ev, ROLE_B, "effective").actions == ("kms:Decrypt",)  # type: ignore[union-attr]  # v2 ∧ boundary
    assert [lint.kind for lint in ev.lints].count("iam-kms-resource-star") == 2


def test_iam_principal_model_is_hashable_and_frozen() -> None:
    p = IamPrincipal(arn=ROLE_B, account=B, kind="role", name="ExampleRole", policies=(PolicyDocument("x", "{}"),))
    assert p.name == "ExampleRole"
