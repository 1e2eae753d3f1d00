"""`kmsaudit evaluate`: documents from files into the evaluator, no AWS calls (SPEC §6)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kmsaudit.errors import InputFileError, UsageError
from kmsaudit.evaluator import AuditScope, evaluate_keys, principals_from_authorization_details
from kmsaudit.evaluator.match import ACCOUNT_RE, arn_account
from kmsaudit.evaluator.policy import PolicyParseError, load_document
from kmsaudit.model import Evaluation, Grant, KeyRecord, Organization

KEY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
PLACEHOLDER_KEY_ID = "00000000-0000-0000-0000-000000000000"


def read_json(path: str, option: str) -> Any:
    """A JSON file, or InputFileError naming the option and the file (exit 2)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"{option} {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{option} {path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputFileError(f"{option} {path}: not valid JSON ({str(exc)[:80]})") from None


def _guess_account(policy: Any) -> str | None:
    """The account whose root gets `kms:*`: the statement that enables IAM policies."""
    try:
        doc = load_document(policy)
    except PolicyParseError:
        return None
    statements = doc.get("Statement")
    for stmt in statements if isinstance(statements, list) else [statements]:
        if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow":
            continue
        principal = stmt.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, dict) else None
        actions = stmt.get("Action")
        actions = actions if isinstance(actions, list) else [actions]
        if isinstance(aws, str) and any(a in ("kms:*", "*") for a in actions):
            account = aws if ACCOUNT_RE.match(aws) else arn_account(aws)
            if ACCOUNT_RE.match(account) and aws.endswith((":root", account)):
                return account
    return None


def _grants(data: Any, path: str) -> tuple[Grant, ...]:
    items = data.get("Grants") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputFileError(f"--grants {path}: expected the output of `aws kms list-grants`")
    grants = []
    for item in items:
        if not isinstance(item, dict):
            continue
        grants.append(
            Grant(
                grant_id=str(item.get("GrantId", "")),
                grantee_principal=str(item.get("GranteePrincipal", "")),
                operations=tuple(str(op) for op in item.get("Operations") or []),
                key_id=str(item.get("KeyId", "")),
                name=str(item.get("Name", "")),
                retiring_principal=str(item.get("RetiringPrincipal", "")),
                issuing_account=str(item.get("IssuingAccount", "")),
                constraints=item.get("Constraints") or None,
            )
        )
    return tuple(grants)


def _organization(data: Any, path: str) -> Organization:
    accounts = data.get("Accounts") if isinstance(data, dict) else None
    if not isinstance(accounts, list):
        raise InputFileError(f"--org {path}: expected the output of `aws organizations list-accounts`")
    ids, org_id = set(), ""
    for account in accounts:
        if isinstance(account, dict) and ACCOUNT_RE.match(str(account.get("Id", ""))):
            ids.add(str(account["Id"]))
            parts = str(account.get("Arn", "")).split("/")
            if len(parts) >= 3 and parts[-2].startswith("o-"):
                org_id = parts[-2]
    if not org_id:
        raise InputFileError(f"--org {path}: no organization id in the account ARNs")
    return Organization(org_id=org_id, accounts=frozenset(ids))


def evaluate_files(
    key_policy: str,
    key_arn: str | None = None,
    grants: str | None = None,
    iam: Sequence[str] = (),
    org: str | None = None,
    trust: Sequence[str] = (),
) -> tuple[Evaluation, str | None]:
    """Evaluate one key from files; also returns a note for the user, if any."""
    note = None
    data = read_json(key_policy, "--key-policy")
    # `aws kms get-key-policy` prints {"Policy": "<json text>", "PolicyName": "default"}.
    policy = data["Policy"] if isinstance(data, dict) and isinstance(data.get("Policy"), str) else data
    if key_arn is None:
        account = _guess_account(policy)
        if account is None:
            raise UsageError("--key-arn is needed: the key policy does not show the key's account")
        key_arn = f"arn:aws:kms:us-east-1:{account}:key/{PLACEHOLDER_KEY_ID}"
        note = f"note: no --key-arn given; assuming the key is in account {account} ({key_arn})"
    elif not KEY_ARN_RE.match(key_arn):
        raise UsageError(f"--key-arn {key_arn!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
    parts = key_arn.split(":")
    key = KeyRecord(
        arn=key_arn,
        account=parts[4],
        region=parts[3],
        key_id=parts[5].split("/", 1)[1],
        policy=policy,
        grants=_grants(read_json(grants, "--grants"), grants) if grants else (),
    )
    principals = []
    for item in iam:
        account, sep, path = item.partition("=")
        if not sep or not ACCOUNT_RE.match(account):
            raise UsageError(f"--iam {item!r}: expected ACCOUNT=FILE with a 12-digit account id")
        details = read_json(path, "--iam")
        if not isinstance(details, dict):
            raise InputFileError(f"--iam {path}: expected `aws iam get-account-authorization-details` output")
        principals.extend(principals_from_authorization_details(details, account))
    for account in trust:
        if not ACCOUNT_RE.match(account):
            raise UsageError(f"--trust {account!r}: not a 12-digit account id")
    scope = AuditScope(
        principals,
        audited_accounts=[i.partition("=")[0] for i in iam],
        trusted_accounts=trust,
        organization=_organization(read_json(org, "--org"), org) if org else None,
    )
    return evaluate_keys([key], scope), note
