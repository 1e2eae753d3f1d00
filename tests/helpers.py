"""Small builders so evaluator tests read like the rules they check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from explaincheck import check_explained

from kmsaudit.evaluator import AuditScope, evaluate_keys
from kmsaudit.model import Evaluation, Finding, Grant, IamPrincipal, KeyRecord, Organization, PolicyDocument

# Copies of ../shared/seeds (the AWS documents the project started from), cited by file name.
SEEDS = Path(__file__).resolve().parent / "data" / "seeds"
A = "111122223333"  # the key's account
B = "444455556666"  # an external account
C = "777788889999"  # another external account
KEY_ARN = f"arn:aws:kms:us-west-2:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROOT_A = f"arn:aws:iam::{A}:root"
ROOT_B = f"arn:aws:iam::{B}:root"
ROLE_B = f"arn:aws:iam::{B}:role/ExampleRole"
USER_B = f"arn:aws:iam::{B}:user/ExampleUser"
OTHER_ROLE_B = f"arn:aws:iam::{B}:role/OtherRole"
USE_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]

# SPEC §4: the fields every finding has at least.
CONTRACT_FIELDS = frozenset(
    {
        "id",
        "key_arn",
        "key_account",
        "region",
        "principal",
        "principal_account",
        "access",
        "zone",
        "via",
        "actions",
        "conditional",
        "conditions",
        "severity",
        "accepted",
        "accepted_by",
    }
)
# USE_ACTIONS (003_…txt's key users statement) expanded to concrete actions.
USE_EXPANDED = frozenset(
    {
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyPair",
        "kms:GenerateDataKeyPairWithoutPlaintext",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:DescribeKey",
    }
)

ENABLE_IAM = {
    "Sid": "Enable IAM policies",
    "Effect": "Allow",
    "Principal": {"AWS": ROOT_A},
    "Action": "kms:*",
    "Resource": "*",
}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [ENABLE_IAM, *statements]}


def allow(
    principal: Any, actions: Any = "kms:*", condition: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    stmt: dict[str, Any] = {"Effect": "Allow", "Principal": principal, "Action": actions, "Resource": "*"}
    if condition:
        stmt["Condition"] = condition
    stmt.update(extra)
    return stmt


def deny(principal: Any, actions: Any = "kms:*", condition: dict[str, Any] | None = None) -> dict[str, Any]:
    stmt = allow(principal, actions, condition)
    stmt["Effect"] = "Deny"
    return stmt


def iam_allow(actions: Any = "kms:*", resource: Any = KEY_ARN, **extra: Any) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource, **extra}],
    }


def iam_deny(actions: Any = "kms:*", resource: Any = "*") -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": actions, "Resource": resource}]}


def principal(
    arn: str,
    *docs: dict[str, Any],
    boundary: dict[str, Any] | None = None,
    tags: tuple[tuple[str, str], ...] = (),
) -> IamPrincipal:
    kind, name = arn.split(":")[5].split("/", 1)
    return IamPrincipal(
        arn=arn,
        account=arn.split(":")[4],
        kind=kind,
        name=name.rsplit("/", 1)[-1],
        policies=tuple(PolicyDocument(f"inline:p{i}", d) for i, d in enumerate(docs)),
        boundary=PolicyDocument("boundary", boundary) if boundary is not None else None,
        tags=tags,
    )


def key(
    doc: Any,
    *,
    grants: tuple[Grant, ...] = (),
    aliases: tuple[str, ...] = (),
    tags: tuple[tuple[str, str], ...] = (),
    arn: str = KEY_ARN,
) -> KeyRecord:
    parts = arn.split(":")
    text = doc if isinstance(doc, str) or doc is None else json.dumps(doc)
    return KeyRecord(
        arn=arn,
        account=parts[4],
        region=parts[3],
        key_id=parts[5].split("/")[1],
        policy=text,
        grants=grants,
        aliases=aliases,
        tags=tags,
    )


def run(
    doc: Any,
    *principals: IamPrincipal,
    grants: tuple[Grant, ...] = (),
    org: Organization | None = None,
    trusted: tuple[str, ...] = (),
    audited: tuple[str, ...] = (),
    **key_args: Any,
) -> Evaluation:
    scope = AuditScope(principals, audited_accounts=audited, trusted_accounts=trusted, organization=org)
    record = key(doc, grants=grants, **key_args)
    # Every case also checks SPEC §4's explanation and remediation promises (tests/explaincheck.py).
    check_explained(record, scope)
    return evaluate_keys([record], scope)


def by(evaluation: Evaluation, principal_arn: str, access: str | None = None) -> Finding | None:
    """The finding for a principal (and access level), or None."""
    hits = [f for f in evaluation.findings if f.principal == principal_arn and (access is None or f.access == access)]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def actions(finding: Finding | None) -> set[str]:
    return set(finding.actions) if finding else set()


def seed(prefix: str) -> str:
    return next(SEEDS.glob(f"{prefix}_*.txt")).read_text(encoding="utf-8")


def seed_json_blocks(prefix: str) -> list[Any]:
    """Every JSON object in a seed's fenced code blocks (``` or reST '::' indented blocks)."""
    text = seed(prefix)
    blocks: list[Any] = []
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        try:
            blocks.append(json.loads(block))
        except ValueError:
            continue
    return blocks


def hostile_policy(min_bytes: int = 32 * 1024, tag: int = 0, principal_arn: str = ROLE_B) -> dict[str, Any]:
    """A policy of at least `min_bytes` (32 KB: AWS's key-policy limit) built to be expensive:
    wildcards that make a backtracking matcher explode, Deny and Allow mixed, conditions on
    every statement. Unique per `tag`, so no parse cache helps. (issue #7; bench/faults.py)"""
    statements: list[dict[str, Any]] = []
    while len(json.dumps({"Statement": statements})) < min_bytes:
        i = len(statements)
        statements.append(
            {
                "Sid": f"s{tag}x{i}",
                "Effect": "Allow" if i % 3 else "Deny",
                "Principal": {"AWS": [f"arn:aws:iam::{100000000000 + i}:role/*a*a*a*a*b", principal_arn]},
                "Action": ["kms:*e*e*e*e*x", "kms:Decrypt"],
                "Resource": ["arn:aws:kms:*:" + "*1" * 12 + "2", "*"],
                "Condition": {"StringLike": {"aws:PrincipalArn": "*a" * 10 + "b"}, "Bool": {"aws:Odd": "true"}},
            }
        )
    return {"Statement": statements}
