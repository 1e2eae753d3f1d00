"""`kmsaudit evaluate`: documents from files into the evaluator, no AWS calls (SPEC §6)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from kmsaudit.cli.inputs import read_input
from kmsaudit.errors import InputFileError, UsageError
from kmsaudit.evaluator import AuditScope, principals_from_authorization_details
from kmsaudit.evaluator.match import ACCOUNT_RE, arn_account
from kmsaudit.evaluator.policy import PolicyParseError, load_document
from kmsaudit.model import Grant, KeyRecord, Organization

KEY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
PLACEHOLDER_KEY_ID = "00000000-0000-0000-0000-000000000000"


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


def _grants(data: Any) -> tuple[Grant, ...]:
    """`list-grants` output (or its bare list), already checked by its shape (cli/inputs.py)."""
    items: list[Any] = data["Grants"] if isinstance(data, dict) else data
    return tuple(
        Grant(
            grant_id=item["GrantId"],
            grantee_principal=item["GranteePrincipal"],
            operations=tuple(item["Operations"]),
            key_id=str(item.get("KeyId") or ""),
            name=str(item.get("Name") or ""),
            retiring_principal=str(item.get("RetiringPrincipal") or ""),
            issuing_account=str(item.get("IssuingAccount") or ""),
            constraints=item.get("Constraints") or None,
        )
        for item in items
    )


def _grants_key(grants: Sequence[Grant], path: str, key_arn: str | None) -> str | None:
    """The key the grants are of: refused when it is not --key-arn; taken when no --key-arn."""
    named = {g.key_id for g in grants if g.key_id}
    if key_arn is not None:
        other = sorted(k for k in named if k != key_arn and k != key_arn.rsplit("/", 1)[-1])
        if other:
            raise InputFileError(f"--grants {path}: these are the grants of {other[0]}, not of --key-arn {key_arn}")
        return key_arn
    if len(named) > 1:
        raise InputFileError(
            f"--grants {path}: grants of {len(named)} keys ({', '.join(sorted(named))}); one key's, please"
        )
    arn = next(iter(named), None)
    return arn if arn and KEY_ARN_RE.match(arn) else None


def _organization(data: Any, path: str) -> Organization:
    """`list-accounts` output, already checked by its shape (cli/inputs.py)."""
    ids, org_id = set(), ""
    for account in data["Accounts"]:
        if ACCOUNT_RE.match(account["Id"]):
            ids.add(account["Id"])
            parts = account["Arn"].split("/")
            if len(parts) >= 3 and parts[-2].startswith("o-"):
                org_id = parts[-2]
    if not org_id:
        raise InputFileError(f"--org {path}: no organization id in the account ARNs")
    return Organization(org_id=org_id, accounts=frozenset(ids))


def _details_account(details: Any, item: str, account: str) -> None:
    """Authorization details are one account's: refused for another (they would make it audited)."""
    accounts = {
        arn_account(entry["Arn"])
        for name in ("UserDetailList", "GroupDetailList", "RoleDetailList")
        for entry in details.get(name) or []
    }
    others = sorted(accounts - {account})
    if others:
        theirs = others[0] if len(accounts) == 1 else ", ".join(sorted(accounts))
        raise InputFileError(f"--iam {item}: these are the details of account {theirs}, not {account}")


def read_files(
    key_policy: str,
    key_arn: str | None = None,
    grants: str | None = None,
    iam: Sequence[str] = (),
    org: str | None = None,
    trust: Sequence[str] = (),
) -> tuple[KeyRecord, AuditScope, str | None]:
    """The key and the audit scope `evaluate`'s files describe, and a note for the user, if any."""
    note = None
    data = read_input(key_policy, "--key-policy", "key-policy")
    # `aws kms get-key-policy` prints {"Policy": "<json text>", "PolicyName": "default"}.
    policy = data["Policy"] if isinstance(data.get("Policy"), str) else data
    key_grants = _grants(read_input(grants, "--grants", "grants")) if grants else ()
    if key_arn is not None and not KEY_ARN_RE.match(key_arn):
        raise UsageError(f"--key-arn {key_arn!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
    named = _grants_key(key_grants, grants or "", key_arn)
    if key_arn is None and named is not None:
        key_arn = named
        note = f"note: no --key-arn given; the key's ARN is taken from the grants ({key_arn})"
    elif key_arn is None:
        account = _guess_account(policy)
        if account is None:
            raise UsageError("--key-arn is needed: the key policy does not show the key's account")
        key_arn = f"arn:aws:kms:us-east-1:{account}:key/{PLACEHOLDER_KEY_ID}"
        note = f"note: no --key-arn given; assuming the key is in account {account} ({key_arn})"
    parts = key_arn.split(":")
    if not isinstance(policy, str):
        # As text, as a scan reads it, so the key-policy lints see its size too (the compact form:
        # if even that is over KMS's 32 KB, `put-key-policy` refuses the file).
        policy = json.dumps(policy, separators=(",", ":"))
    key = KeyRecord(
        arn=key_arn,
        account=parts[4],
        region=parts[3],
        key_id=parts[5].split("/", 1)[1],
        policy=policy,
        grants=key_grants,
    )
    principals = []
    for item in iam:
        account, sep, path = item.partition("=")
        if not sep or not ACCOUNT_RE.match(account):
            raise UsageError(f"--iam {item!r}: expected ACCOUNT=FILE with a 12-digit account id")
        details = read_input(path, "--iam", "iam")
        _details_account(details, item, account)
        principals.extend(principals_from_authorization_details(details, account))
    for account in trust:
        if not ACCOUNT_RE.match(account):
            raise UsageError(f"--trust {account!r}: not a 12-digit account id")
    scope = AuditScope(
        principals,
        audited_accounts=[i.partition("=")[0] for i in iam],
        trusted_accounts=trust,
        organization=_organization(read_input(org, "--org", "org"), org) if org else None,
    )
    return key, scope, note
