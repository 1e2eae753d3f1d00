"""IAM is global: one GetAccountAuthorizationDetails walk per account, all pages (SPEC §9)."""

from __future__ import annotations

from typing import Any

from kmsaudit.collect.api import Api
from kmsaudit.evaluator import principals_from_authorization_details
from kmsaudit.model import IamPrincipal

_LISTS = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")


async def collect_iam(api: Api, iam: Any, account: str) -> list[IamPrincipal]:
    merged: dict[str, list[Any]] = {name: [] for name in _LISTS}
    params: dict[str, Any] = {"Filter": ["User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy"]}
    while True:
        page = await api.call(iam, account, "global", "GetAccountAuthorizationDetails", **params)
        for name in _LISTS:
            merged[name].extend(page.get(name) or [])
        if not page.get("IsTruncated") or not page.get("Marker"):
            break
        params["Marker"] = page["Marker"]
    for policy in merged["Policies"]:
        # moto omits PolicyName; AWS always sends it. Names come from the ARN then.
        policy.setdefault("PolicyName", str(policy.get("Arn", "")).rsplit("/", 1)[-1])
    return principals_from_authorization_details(merged, account)
