"""IAM is global: one GetAccountAuthorizationDetails walk per account, all pages (SPEC §9)."""

from __future__ import annotations

from typing import Any

from kmsaudit.collect.api import Api
from kmsaudit.evaluator import principals_from_authorization_details
from kmsaudit.model import IamPrincipal

_LISTS = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")


async def collect_iam(api: Api, iam: Any, account: str) -> list[IamPrincipal]:
    merged: dict[str, list[Any]] = {name: [] for name in _LISTS}
    kinds = ["User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy"]
    async for page in api.responses(iam, account, "global", "GetAccountAuthorizationDetails", Filter=kinds):
        for name in _LISTS:
            merged[name].extend(page.get(name) or [])
    for policy in merged["Policies"]:
        # moto omits PolicyName; AWS always sends it. Names come from the ARN then.
        policy.setdefault("PolicyName", str(policy.get("Arn", "")).rsplit("/", 1)[-1])
    return principals_from_authorization_details(merged, account)
