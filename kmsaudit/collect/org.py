"""AWS Organizations: member accounts, and the SCPs and RCPs that apply to each (SPEC §2.9, §9)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from kmsaudit.collect.api import Api
from kmsaudit.errors import CollectError
from kmsaudit.model import Organization

log = structlog.get_logger("kmsaudit.collect")


ACCOUNTS_AT_ONCE = 16  # accounts whose parents and policies are read concurrently


class _OrgReader:
    """Parents and attached policies, each read once however many accounts ask at the same time."""

    def __init__(self, api: Api, client: Any, account: str) -> None:
        self.api, self.client, self.account = api, client, account
        self._pending: dict[tuple[str, ...], asyncio.Future[Any]] = {}

    async def _once(self, marker: tuple[str, ...], read: Callable[[], Awaitable[Any]]) -> Any:
        pending = self._pending.get(marker)
        if pending is None:
            pending = self._pending[marker] = asyncio.ensure_future(read())
        return await asyncio.shield(pending)

    async def path(self, child: str) -> list[str]:
        """Root first, then OUs, down to (not including) the child."""
        return list(await self._once(("parents", child), lambda: self._path(child)))

    async def _path(self, child: str) -> list[str]:
        parents = await self.api.pages(self.client, self.account, "global", "ListParents", "Parents", ChildId=child)
        if not parents:
            return []
        if parents[0].get("Type") == "ROOT":
            return [str(parents[0]["Id"])]
        parent = str(parents[0]["Id"])
        return [*await self.path(parent), parent]

    async def documents(self, target: str, policy_type: str) -> tuple[Any, ...]:
        attached = await self._once(("attached", target, policy_type), lambda: self._attached(target, policy_type))
        return tuple([await self._once(("policy", p), functools.partial(self._document, p)) for p in attached])

    async def _attached(self, target: str, policy_type: str) -> list[str]:
        found = await self.api.pages(
            self.client,
            self.account,
            "global",
            "ListPoliciesForTarget",
            "Policies",
            TargetId=target,
            Filter=policy_type,
        )
        return [str(p["Id"]) for p in found]

    async def _document(self, policy_id: str) -> Any:
        described = await self.api.call(self.client, self.account, "global", "DescribePolicy", PolicyId=policy_id)
        content = described.get("Policy", {}).get("Content", "{}")
        return json.loads(content) if isinstance(content, str) else content

    def close(self) -> None:
        for pending in self._pending.values():
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # reported through whoever awaited it


async def collect_organization(api: Api, client: Any, caller_account: str, audit_policies: bool = True) -> Organization:
    """The organization, its active accounts, and per account the policy levels root → account.

    Accounts are read concurrently (issue #19: one after the other, a 1,000-account organization
    took minutes before the first KMS request); shared parents and policies are read once."""
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
    at_once = asyncio.Semaphore(ACCOUNTS_AT_ONCE)

    async def read(account: str) -> None:
        async with at_once:
            chain = await reader.path(account)
            paths[account] = "/".join([org_id, *chain]) + "/"
            if not audit_policies or account == management:
                return  # SCPs and RCPs never apply to the management account
            targets = [*chain, account]
            for policy_type, out in (("SERVICE_CONTROL_POLICY", scps), ("RESOURCE_CONTROL_POLICY", rcps)):
                try:
                    out[account] = tuple([await reader.documents(t, policy_type) for t in targets])
                except CollectError as exc:
                    # RCPs may not be enabled in the organization: audit without them, say so.
                    log.warning("org.policies_unavailable", policy_type=policy_type, account=account, reason=str(exc))
                    break

    try:
        await asyncio.gather(*(read(account) for account in sorted(ids)))
    finally:
        reader.close()
    return Organization(org_id=org_id, accounts=ids, scps=scps, rcps=rcps, org_paths=paths)
