"""AWS Organizations: member accounts, and the SCPs and RCPs that apply to each (SPEC §2.9, §9)."""

from __future__ import annotations

import json
from typing import Any

import structlog

from kmsaudit.collect.api import Api
from kmsaudit.errors import CollectError
from kmsaudit.model import Organization

log = structlog.get_logger("kmsaudit.collect")


class _OrgReader:
    def __init__(self, api: Api, client: Any, account: str) -> None:
        self.api, self.client, self.account = api, client, account
        self._parents: dict[str, list[str]] = {}
        self._documents: dict[str, Any] = {}
        self._attached: dict[tuple[str, str], list[str]] = {}

    async def path(self, child: str) -> list[str]:
        """Root first, then OUs, down to (not including) the child."""
        if child not in self._parents:
            parents = await self.api.pages(self.client, self.account, "global", "ListParents", "Parents", ChildId=child)
            if not parents:
                self._parents[child] = []
            elif parents[0].get("Type") == "ROOT":
                self._parents[child] = [str(parents[0]["Id"])]
            else:
                parent = str(parents[0]["Id"])
                self._parents[child] = [*await self.path(parent), parent]
        return self._parents[child]

    async def documents(self, target: str, policy_type: str) -> tuple[Any, ...]:
        if (target, policy_type) not in self._attached:
            attached = await self.api.pages(
                self.client,
                self.account,
                "global",
                "ListPoliciesForTarget",
                "Policies",
                TargetId=target,
                Filter=policy_type,
            )
            self._attached[(target, policy_type)] = [str(p["Id"]) for p in attached]
        docs = []
        for policy_id in self._attached[(target, policy_type)]:
            if policy_id not in self._documents:
                described = await self.api.call(
                    self.client, self.account, "global", "DescribePolicy", PolicyId=policy_id
                )
                content = described.get("Policy", {}).get("Content", "{}")
                self._documents[policy_id] = json.loads(content) if isinstance(content, str) else content
            docs.append(self._documents[policy_id])
        return tuple(docs)


async def collect_organization(api: Api, client: Any, caller_account: str, audit_policies: bool = True) -> Organization:
    """The organization, its active accounts, and per account the policy levels root → account."""
    described = await api.call(client, caller_account, "global", "DescribeOrganization")
    org = described["Organization"]
    org_id, management = str(org["Id"]), str(org.get("MasterAccountId", ""))
    accounts = [
        a
        for a in await api.pages(client, caller_account, "global", "ListAccounts", "Accounts")
        if a.get("Status", "ACTIVE") == "ACTIVE"
    ]
    ids = frozenset(str(a["Id"]) for a in accounts)
    reader = _OrgReader(api, client, caller_account)
    scps: dict[str, tuple[tuple[Any, ...], ...]] = {}
    rcps: dict[str, tuple[tuple[Any, ...], ...]] = {}
    paths: dict[str, str] = {}
    for account in sorted(ids):
        chain = await reader.path(account)
        paths[account] = "/".join([org_id, *chain]) + "/"
        if not audit_policies or account == management:
            continue  # SCPs and RCPs never apply to the management account
        targets = [*chain, account]
        for policy_type, out in (("SERVICE_CONTROL_POLICY", scps), ("RESOURCE_CONTROL_POLICY", rcps)):
            try:
                out[account] = tuple([await reader.documents(t, policy_type) for t in targets])
            except CollectError as exc:
                # RCPs may not be enabled in the organization: audit without them, say so.
                log.warning("org.policies_unavailable", policy_type=policy_type, account=account, reason=str(exc))
                break
    return Organization(org_id=org_id, accounts=ids, scps=scps, rcps=rcps, org_paths=paths)
