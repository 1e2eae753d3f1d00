"""Credentials: ambient, or STS AssumeRole per account, refreshed before expiry (for daemons)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession, get_session

from kmsaudit.collect.errors import convert
from kmsaudit.config.settings import ScanSettings

STS_REGION = "us-east-1"


class OneTlsContext(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, with one TLS context for every client of the process.

    aiobotocore builds a context for each client and reads the CA bundle into it (16 ms of CPU);
    a scan has a client per account × region (an organization: thousands). A context with no
    client certificate is the same for all, and may be shared. (`connector_args={"ssl_context":
    ...}` would be the way, but aiobotocore 3.10 passes it to aiohttp beside its own `ssl`, which
    aiohttp refuses.)"""

    _contexts: ClassVar[dict[object, ssl.SSLContext]] = {}

    def _build_verify_context(self) -> ssl.SSLContext:
        if self._cert_file or not isinstance(self._verify, bool | str):
            return super()._build_verify_context()  # type: ignore[no-any-return]
        context = self._contexts.get(self._verify)
        if context is None:
            context = self._contexts[self._verify] = super()._build_verify_context()
        return context


def client_config(settings: ScanSettings) -> AioConfig:
    """botocore's retry modes do the backoff with jitter (SPEC §9: retries everywhere)."""
    return AioConfig(
        max_pool_connections=max(10, settings.concurrency),
        retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        user_agent_extra="kmsaudit",
        http_session_cls=OneTlsContext,
    )


def _assume_role_refresher(
    sts: Callable[[], Awaitable[Any]], params: dict[str, Any]
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """`sts`: the client that assumes every account's role (one for all accounts, not one each)."""

    async def refresh() -> dict[str, Any]:
        response = await (await sts()).assume_role(**params)
        creds = response["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    return refresh


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        self._clients: dict[tuple[int, str, str], asyncio.Future[Any]] = {}
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Sessions:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients.values():
            if not client.done():
                client.cancel()
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

    def handed_over(self, accounts: Iterable[str]) -> dict[str, dict[str, str]]:
        """The role credentials of these accounts, as AssumeRole gave them (for the worker
        processes of a scan: they read with them instead of assuming every role again)."""
        out: dict[str, dict[str, str]] = {}
        for account in accounts:
            pending = self._sessions.get(account)
            if pending is None or not pending.done() or pending.cancelled() or pending.exception() is not None:
                continue
            credentials = pending.result()._credentials
            if not isinstance(credentials, AioRefreshableCredentials) or pending.result() is self.base:
                continue  # ambient credentials: every process has its own
            out[account] = {
                "access_key": credentials._access_key,
                "secret_key": credentials._secret_key,
                "token": credentials._token,
                "expiry_time": credentials._expiry_time.isoformat(),
            }
        return out

    def adopt(self, account: str, role_arn: str, external_id: str | None, metadata: dict[str, str]) -> AioSession:
        """The account's session from credentials its role gave the scan's process: no AssumeRole
        here until they near their expiry (then this process assumes the role itself)."""
        refresh = _assume_role_refresher(
            lambda: self.client(self.base, "sts", STS_REGION), self._assume_params(role_arn, external_id)
        )
        adopted: asyncio.Future[AioSession] = asyncio.get_running_loop().create_future()
        adopted.set_result(self._session_with(metadata, refresh))
        self._sessions[account] = adopted
        return adopted.result()

    def _assume_params(self, role_arn: str, external_id: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": self.settings.session_name}
        if external_id:
            params["ExternalId"] = external_id
        return params

    async def _open(self, role_arn: str | None, external_id: str | None) -> AioSession:
        if role_arn is None:
            return self.base
        params = self._assume_params(role_arn, external_id)
        refresh = _assume_role_refresher(lambda: self.client(self.base, "sts", STS_REGION), params)
        try:
            metadata = await refresh()
        except Exception as exc:
            raise convert(exc, f"AssumeRole {role_arn}") from None
        return self._session_with(metadata, refresh)

    def _session_with(self, metadata: dict[str, Any], refresh: Callable[[], Awaitable[dict[str, Any]]]) -> AioSession:
        credentials = AioRefreshableCredentials(
            access_key=metadata["access_key"],
            secret_key=metadata["secret_key"],
            token=metadata["token"],
            expiry_time=AioRefreshableCredentials._expiry_datetime(metadata["expiry_time"]),
            refresh_using=refresh,
            method="assume-role",
            # Checked before every request: UTC costs 0.4 µs, botocore's default (the local zone
            # through dateutil) 9 µs; the expiry is an aware datetime either way.
            time_fetcher=_utc_now,
        )
        session = get_session()
        # One loader for every account: service models are read and parsed once, not once per
        # account (0.1 s of CPU an account for KMS, STS and IAM; an organization has hundreds).
        session.register_component("data_loader", self.base.get_component("data_loader"))
        session._credentials = credentials
        if self._on_response is not None:
            session.register("response-received", self._on_response)
        return session

    def clients(self) -> list[Any]:
        """The clients made so far (and still open)."""
        return [c.result() for c in self._clients.values() if c.done() and not c.cancelled() and not c.exception()]

    async def client(self, session: AioSession, service: str, region: str) -> Any:
        """A client that lives until the scan ends (connection pools are reused); single-flight:
        the AssumeRoles of every account ask for the one STS client at once."""
        slot = (id(session), service, region)
        pending = self._clients.get(slot)
        if pending is None:
            pending = self._clients[slot] = asyncio.ensure_future(
                self._stack.enter_async_context(session.create_client(service, region_name=region, config=self.config))
            )
        try:
            return await asyncio.shield(pending)
        except Exception:
            if self._clients.get(slot) is pending:
                del self._clients[slot]  # the next caller tries again
            raise
