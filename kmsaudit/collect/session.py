"""Credentials: ambient, or STS AssumeRole per account, refreshed before expiry (for daemons)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.session import AioSession, get_session

from kmsaudit.collect.errors import convert
from kmsaudit.config import ScanSettings

STS_REGION = "us-east-1"


def client_config(settings: ScanSettings) -> AioConfig:
    """botocore's retry modes do the backoff with jitter (SPEC §9: retries everywhere)."""
    return AioConfig(
        max_pool_connections=max(10, settings.concurrency),
        retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        user_agent_extra="kmsaudit",
    )


def _assume_role_refresher(
    base: AioSession, config: AioConfig, params: dict[str, Any]
) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def refresh() -> dict[str, Any]:
        async with base.create_client("sts", region_name=STS_REGION, config=config) as sts:
            response = await sts.assume_role(**params)
        creds = response["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    return refresh


class Sessions:
    """One aiobotocore session per audited account, and the clients of one scan."""

    def __init__(
        self, settings: ScanSettings, on_response: Callable[..., None] | None = None, base: AioSession | None = None
    ) -> None:
        self.settings = settings
        self.config = client_config(settings)
        self.base = base or get_session()
        self._on_response = on_response
        if on_response is not None:
            self.base.register("response-received", on_response)
        self._sessions: dict[str, asyncio.Future[AioSession]] = {}
        self._clients: dict[tuple[int, str, str], Any] = {}
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Sessions:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pending in self._sessions.values():
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # retrieved: a failure was reported through its waiters
        await self._stack.__aexit__(None, None, None)

    async def for_account(self, account: str, role_arn: str | None, external_id: str | None) -> AioSession:
        """The account's session; AssumeRole happens here, and its failure is a CollectError.

        Single-flight: the IAM task and every region task of an account ask at once, and one
        AssumeRole (one session, one set of connections) serves them all, its failure too."""
        pending = self._sessions.get(account)
        if pending is None:
            pending = self._sessions[account] = asyncio.ensure_future(self._open(role_arn, external_id))
        # shield: one waiter cancelled (its scope abandoned) must not cancel the others' session
        return await asyncio.shield(pending)

    def forget(self, account: str) -> None:
        """Drop the account's session if opening it failed, so the next use tries again. For the
        sessions that outlive one scan (the daemon's event consumer and re-reads): a role that
        could not be assumed once (AWS briefly unreachable) must not stay failed until restart."""
        pending = self._sessions.get(account)
        if pending is not None and pending.done() and (pending.cancelled() or pending.exception() is not None):
            del self._sessions[account]

    async def _open(self, role_arn: str | None, external_id: str | None) -> AioSession:
        if role_arn is None:
            return self.base
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": self.settings.session_name}
        if external_id:
            params["ExternalId"] = external_id
        refresh = _assume_role_refresher(self.base, self.config, params)
        try:
            metadata = await refresh()
        except Exception as exc:
            raise convert(exc, f"AssumeRole {role_arn}") from None
        credentials = AioRefreshableCredentials.create_from_metadata(
            metadata, refresh_using=refresh, method="assume-role"
        )
        session = get_session()
        session._credentials = credentials
        if self._on_response is not None:
            session.register("response-received", self._on_response)
        return session

    async def client(self, session: AioSession, service: str, region: str) -> Any:
        """A client that lives until the scan ends (connection pools are reused)."""
        slot = (id(session), service, region)
        if slot not in self._clients:
            self._clients[slot] = await self._stack.enter_async_context(
                session.create_client(service, region_name=region, config=self.config)
            )
        return self._clients[slot]
