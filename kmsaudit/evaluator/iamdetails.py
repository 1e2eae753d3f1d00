"""`GetAccountAuthorizationDetails` output → `IamPrincipal`s with every policy that applies.

Pure: used by the collector on live answers and by `kmsaudit evaluate --iam` on the JSON that
`aws iam get-account-authorization-details` prints. SPEC §2.1 / §2.9: inline and attached
managed policies (default version only), a user's groups' policies, permissions boundaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kmsaudit.evaluator.match import arn_account
from kmsaudit.model import IamPrincipal, PolicyDocument

# AWS-managed policies whose KMS meaning is well known, used only when the details did not
# include the policy (collected with a filter, or an emulator without AWS-managed policies).
_KNOWN_AWS_MANAGED: dict[str, dict[str, Any]] = {
    "AdministratorAccess": {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    },
    "PowerUserAccess": {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "NotAction": ["iam:*", "organizations:*", "account:*"], "Resource": "*"}],
    },
}


def _managed_documents(policies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Managed policy ARN → document of its default version (SPEC §2.9)."""
    out: dict[str, Any] = {}
    for policy in policies:
        if not isinstance(policy, Mapping):
            continue
        arn = policy.get("Arn")
        if not isinstance(arn, str):
            continue
        default_id = policy.get("DefaultVersionId")
        versions = policy.get("PolicyVersionList") or []
        chosen = None
        for version in versions if isinstance(versions, list) else []:
            if not isinstance(version, Mapping):
                continue
            if version.get("IsDefaultVersion") is True or (default_id and version.get("VersionId") == default_id):
                chosen = version.get("Document")
                break
        if chosen is not None:
            out[arn] = chosen
    return out


def _inline(entries: Any, list_prefix: str) -> list[PolicyDocument]:
    docs = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and "PolicyDocument" in entry:
            docs.append(PolicyDocument(f"{list_prefix}inline:{entry.get('PolicyName', '?')}", entry["PolicyDocument"]))
    return docs


def _attached(
    entries: Any, managed: Mapping[str, Any], unresolved: list[str], prefix: str = ""
) -> list[PolicyDocument]:
    docs = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        arn = entry.get("PolicyArn")
        if not isinstance(arn, str):
            continue
        if arn in managed:
            docs.append(PolicyDocument(prefix + arn, managed[arn]))
        elif arn.rsplit("/", 1)[-1] in _KNOWN_AWS_MANAGED and ":aws:policy/" in arn:
            docs.append(PolicyDocument(prefix + arn, _KNOWN_AWS_MANAGED[arn.rsplit("/", 1)[-1]]))
        else:
            unresolved.append(arn)
    return docs


def _boundary(detail: Mapping[str, Any], managed: Mapping[str, Any], unresolved: list[str]) -> PolicyDocument | None:
    boundary = detail.get("PermissionsBoundary")
    if not isinstance(boundary, Mapping):
        return None
    arn = boundary.get("PermissionsBoundaryArn")
    if not isinstance(arn, str):
        return None
    docs = _attached([{"PolicyArn": arn}], managed, unresolved)
    # A boundary we cannot read allows nothing we can prove; keep it as an empty policy.
    return docs[0] if docs else PolicyDocument(arn, {"Statement": []})


def _tags(entries: Any) -> tuple[tuple[str, str], ...]:
    """`Tags` of a user or role: `aws:PrincipalTag/…` (IAM User Guide, "AWS global condition
    context keys": present when the principal has the tag)."""
    found = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("Key"), str):
            found.append((entry["Key"], str(entry.get("Value", ""))))
    return tuple(found)


def principals_from_authorization_details(details: Mapping[str, Any], account: str | None = None) -> list[IamPrincipal]:
    """Every user and role of one account's authorization details, policies resolved."""
    if not isinstance(details, Mapping):
        raise ValueError("authorization details must be a JSON object")
    managed = _managed_documents(details.get("Policies") or [])
    groups: dict[str, list[PolicyDocument]] = {}
    group_unresolved: dict[str, list[str]] = {}
    for group in details.get("GroupDetailList") or []:
        if not isinstance(group, Mapping):
            continue
        name = str(group.get("GroupName", ""))
        missing: list[str] = []
        docs = _inline(group.get("GroupPolicyList"), f"group:{name}/")
        docs += _attached(group.get("AttachedManagedPolicies"), managed, missing, f"group:{name}/")
        groups[name] = docs
        group_unresolved[name] = missing
    principals: list[IamPrincipal] = []
    for kind, list_key, inline_key in (
        ("user", "UserDetailList", "UserPolicyList"),
        ("role", "RoleDetailList", "RolePolicyList"),
    ):
        for detail in details.get(list_key) or []:
            if not isinstance(detail, Mapping) or not isinstance(detail.get("Arn"), str):
                continue
            arn = detail["Arn"]
            unresolved: list[str] = []
            docs = _inline(detail.get(inline_key), "")
            docs += _attached(detail.get("AttachedManagedPolicies"), managed, unresolved)
            if kind == "user":
                for group_name in detail.get("GroupList") or []:
                    docs += groups.get(str(group_name), [])
                    unresolved += group_unresolved.get(str(group_name), [])
            principals.append(
                IamPrincipal(
                    arn=arn,
                    account=account or arn_account(arn),
                    kind=kind,
                    name=str(detail.get("UserName" if kind == "user" else "RoleName", "")),
                    policies=tuple(docs),
                    boundary=_boundary(detail, managed, unresolved),
                    unresolved=tuple(unresolved),
                    tags=_tags(detail.get("Tags")),
                )
            )
    return principals
