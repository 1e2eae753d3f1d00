"""Collection across accounts × regions, concurrently; one broken scope never stops the others."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiobotocore.session import AioSession

from kmsaudit.collect.api import Api, RequestObserver
from kmsaudit.collect.iam import collect_iam
from kmsaudit.collect.kms import collect_keys, collect_region
from kmsaudit.collect.org import collect_organization
from kmsaudit.collect.session import STS_REGION, Sessions
from kmsaudit.config.settings import Config
from kmsaudit.errors import CollectError
from kmsaudit.evaluator import AuditScope
from kmsaudit.model import IamPrincipal, Organization, ScopeResult

log = structlog.get_logger("kmsaudit.collect")


class SharedSessions:
    """The daemon's sessions for event re-reads (README "Real-time detection"): opened once, with
    each account's identity verified once, and its responses counted for the current collector."""

    def __init__(self, config: Config) -> None:
        self.api: Api | None = None
        self.sessions = Sessions(config.scan, on_response=self._on_response)
        self.identities: dict[str, asyncio.Future[AioSession]] = {}

    def _on_response(self, **kwargs: Any) -> None:
        if self.api is not None:
            self.api.on_response(**kwargs)


@dataclass(frozen=True, slots=True)
class Target:
    account: str
    role_arn: str | None
    external_id: str | None
    regions: tuple[str, ...]


class Collector:
    """`async for scope in collector.scopes()`: each scope as soon as it is read.

    IAM of every account is read first (concurrently with the KMS reads), so `audit_scope`
    is complete before the first scope is yielded and each scope can be evaluated at once.
    """

    def __init__(
        self,
        config: Config,
        observer: RequestObserver | None = None,
        progress: Callable[[str, int], None] | None = None,
        only: Mapping[tuple[str, str], frozenset[str] | None] | None = None,
        audit_scope: AuditScope | None = None,
        reuse: SharedSessions | None = None,
        claim: Callable[[], tuple[str, str] | None] | None = None,
        at_once: int | None = None,
        credentials: Mapping[str, dict[str, str]] | None = None,
        reread: bool = False,
    ) -> None:
        """`only`: just these scopes, and in each just these keys (ARNs; None: every key) — a
        CloudTrail event's re-read (README "Real-time detection"), a worker's share of a scan;
        `audit_scope`: the principals as the last full scan read them, so IAM is not read again;
        `reuse`: the daemon's sessions and verified identities for such re-reads (no AssumeRole
        and no identity check per event); `claim`: the next scope of `only` to read, None when none
        is left — a worker process takes scopes from the ones the scan shares out as it has room
        (kmsaudit/run/workers.py), reading `at_once` of them at the same time; `credentials`: account ->
        the role credentials the scan's process assumed and verified (`handed_over`), used as they
        are: no AssumeRole and no identity check again per worker; `reread`: an event's re-read,
        whose snapshot carries every scope it does not read (even when it reads its scopes whole)."""
        self.config = config
        self._reread = reread
        self.reuse = reuse
        self.only = only
        self.cached_scope = audit_scope
        self.api = Api(config.scan, observer)
        self.progress = progress
        self.principals: list[IamPrincipal] = []
        self.iam_failures: dict[str, str] = {}
        self.organization: Organization | None = None
        self.organization_error = ""
        self.organization_error_code = ""
        self.targets: list[Target] = []
        self.audit_scope: AuditScope | None = None
        self._identities: dict[str, asyncio.Future[AioSession]] = reuse.identities if reuse else {}
        # Scopes read at the same time: each holds its keys until evaluated (issue #19: memory).
        self._scopes_at_once = asyncio.Semaphore(config.scan.scopes_at_once)
        self.claim = claim
        self.at_once = at_once or config.scan.scopes_at_once
        self.credentials = credentials or {}
        self.handed_over: dict[str, dict[str, str]] = {}  # audit_only: for the worker processes

    def _tick(self, what: str, n: int = 1) -> None:
        if self.progress is not None:
            self.progress(what, n)

    async def _targets(self, sessions: Sessions) -> list[Target]:
        cfg = self.config
        targets = {a.id: Target(a.id, a.role_arn, a.external_id, tuple(cfg.regions_of(a))) for a in cfg.accounts}
        org_cfg = cfg.organization
        if org_cfg is not None:
            try:
                arn = org_cfg.management_role_arn
                session = await sessions.for_account(
                    arn.split(":")[4] if arn else "organization", arn, org_cfg.external_id
                )
                client = await sessions.client(session, "organizations", "us-east-1")
                self.organization = await collect_organization(self.api, client, "organization", org_cfg.audit_policies)
            except CollectError as exc:
                self.organization_error, self.organization_error_code = str(exc), exc.code
                log.error("organization.failed", reason=str(exc), code=exc.code)
            else:
                for account in sorted(self.organization.accounts):
                    if account not in targets:
                        role = f"arn:aws:iam::{account}:role/{org_cfg.role_name}"
                        targets[account] = Target(account, role, org_cfg.external_id, tuple(cfg.scan.regions))
        return list(targets.values())

    def _only_targets(self) -> list[Target]:
        """The scopes named by `only`, with each account's role as the config gives it (a member
        account of the organization: the organization's role name)."""
        cfg = self.config
        assert self.only is not None
        by_account: dict[str, list[str]] = {}
        for account, region in self.only:
            by_account.setdefault(account, []).append(region)
        configured = {a.id: a for a in cfg.accounts}
        targets = []
        for account, regions in sorted(by_account.items()):
            if account in configured:
                a = configured[account]
                targets.append(Target(account, a.role_arn, a.external_id, tuple(sorted(regions))))
            elif cfg.organization is not None:
                role = f"arn:aws:iam::{account}:role/{cfg.organization.role_name}"
                targets.append(Target(account, role, cfg.organization.external_id, tuple(sorted(regions))))
        return targets

    async def _session(self, sessions: Sessions, target: Target) -> AioSession:
        """The target's session, once its credentials are known to be the target's own: ambient
        credentials or a role may belong to another account, and data read with them must never
        be filed under this one (issue #13). Checked once per account, for all its tasks."""
        check = self._identities.get(target.account)
        if check is None:
            check = self._identities[target.account] = asyncio.ensure_future(self._verified(sessions, target))
        return await asyncio.shield(check)

    async def _verified(self, sessions: Sessions, target: Target) -> AioSession:
        session = await sessions.for_account(target.account, target.role_arn, target.external_id)
        sts = await sessions.client(session, "sts", STS_REGION)
        identity = await self.api.call(sts, target.account, "global", "GetCallerIdentity")
        actual = str(identity.get("Account", ""))
        if actual != target.account:
            how = f"role {target.role_arn}" if target.role_arn else "the ambient credentials (no role_arn)"
            raise CollectError(
                f"wrong-account: {how} gave credentials of account {actual}, not {target.account}: "
                "set role_arn to a role in that account, or fix the account id",
                code="wrong-account",
            )
        return session

    async def _iam(self, sessions: Sessions, target: Target) -> None:
        try:
            session = await self._session(sessions, target)
            client = await sessions.client(session, "iam", "us-east-1")
            self.principals.extend(await collect_iam(self.api, client, target.account))
            log.info("iam.done", account=target.account)
        except CollectError as exc:
            self.iam_failures[target.account] = str(exc)
            log.error("iam.failed", account=target.account, reason=str(exc), code=exc.code)
        self._tick("iam")

    async def _scope(self, sessions: Sessions, target: Target, region: str) -> ScopeResult:
        async with self._scopes_at_once:
            return await self._read_scope(sessions, target, region)

    async def _read_scope(self, sessions: Sessions, target: Target, region: str) -> ScopeResult:
        started = time.monotonic()
        client: Any = None
        feedback = self.api.pacer_feedback(target.account, region)
        try:
            session = await self._session(sessions, target)
            client = await sessions.client(session, "kms", region)
            # One KMS client per scope: its responses steer that scope's pacers. Unregistered when
            # the scope is read: the daemon's clients outlive every re-read (issue #24, defect 7).
            client.meta.events.register("response-received.kms", feedback)
            wanted = self.only.get((target.account, region)) if self.only is not None else None
            if wanted is not None:
                keys = await collect_keys(self.api, client, target.account, region, wanted)
            else:
                keys = await collect_region(
                    self.api, client, target.account, region, progress=lambda n: self._tick("keys", n)
                )
        except CollectError as exc:
            log.error("scope.failed", account=target.account, region=region, reason=str(exc), code=exc.code)
            return ScopeResult(
                target.account,
                region,
                False,
                error=str(exc),
                error_code=exc.code,
                duration_seconds=time.monotonic() - started,
            )
        finally:
            if client is not None:
                client.meta.events.unregister("response-received.kms", feedback)
        log.info("scope.done", account=target.account, region=region, keys=len(keys))
        return ScopeResult(
            target.account,
            region,
            True,
            tuple(keys),
            duration_seconds=time.monotonic() - started,
            partial=tuple(sorted(wanted)) if wanted is not None else None,
        )

    async def _claimed(self, sessions: Sessions) -> AsyncIterator[ScopeResult]:
        """The scopes this process claims, each yielded as soon as it is read. At most `at_once`
        are held at a time, from the claim until the caller is done with the scope (read, waiting,
        or being evaluated: each holds its keys, issue #19), and a new one is claimed only then, so
        the scopes this process has no room for are left to the other workers."""
        assert self.claim is not None
        claim = self.claim
        targets = {t.account: t for t in self.targets}
        results: asyncio.Queue[ScopeResult | None] = asyncio.Queue()
        room = asyncio.Semaphore(self.at_once)

        async def reader() -> None:
            try:
                while True:
                    await room.acquire()
                    scope = claim()
                    if scope is None:
                        room.release()
                        return
                    target = targets.get(scope[0])
                    if target is None:  # not an account of this config: never silently skipped
                        error = f"account {scope[0]} is neither configured nor in the organization"
                        await results.put(ScopeResult(scope[0], scope[1], False, error=error, error_code="config"))
                        continue
                    await results.put(await self._read_scope(sessions, target, scope[1]))
            finally:
                results.put_nowait(None)

        readers = [asyncio.create_task(reader()) for _ in range(self.at_once)]
        try:
            running = len(readers)
            while running:
                result = await results.get()
                if result is not None:
                    yield result
                    room.release()  # the caller is done with it: room for the next scope
                    continue
                running -= 1
                for task in readers:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def audit_only(self) -> None:
        """Targets, the organization and every account's IAM, without reading KMS: what a scan
        on several processes reads once and shares (kmsaudit/run/workers.py)."""
        async with Sessions(self.config.scan, on_response=self.api.on_response) as sessions:
            self.targets = await self._targets(sessions)
            self._tick("accounts", len(self.targets))
            await asyncio.gather(*(self._iam(sessions, t) for t in self.targets))
            self.audit_scope = AuditScope(
                self.principals,
                audited_accounts=[t.account for t in self.targets if t.account not in self.iam_failures],
                trusted_accounts=[*self.config.trust.accounts, *(t.account for t in self.targets)],
                organization=self.organization,
            )
            verified = []
            for account, check in self._identities.items():
                if check.done() and not check.cancelled():
                    if check.exception() is None:  # else reported through the IAM read that waited on it
                        verified.append(account)
            self.handed_over = sessions.handed_over(verified)
        self._identities = {}  # the sessions are closed: a worker verifies its own

    async def scopes(self) -> AsyncIterator[ScopeResult]:
        if self.reuse is not None:
            self.reuse.api = self.api  # its responses count for this collector
        opened = (
            contextlib.nullcontext(self.reuse.sessions)
            if self.reuse is not None
            else Sessions(self.config.scan, on_response=self.api.on_response)
        )
        async with opened as sessions:
            if self.only is not None and self.cached_scope is not None:
                self.targets = self._only_targets()  # the organization and IAM as last read
                self.organization = self.cached_scope.organization
            else:
                self.targets = await self._targets(sessions)
                self._tick("planned", self.scope_count)
                self._tick("accounts", len(self.targets))
            for target in self.targets:
                metadata = self.credentials.get(target.account)
                if metadata is not None and target.role_arn and target.account not in self._identities:
                    adopted = sessions.adopt(target.account, target.role_arn, target.external_id, metadata)
                    verified: asyncio.Future[AioSession] = asyncio.get_running_loop().create_future()
                    verified.set_result(adopted)  # checked by the scan's process
                    self._identities[target.account] = verified
            reuse = self.cached_scope is not None and self.only is not None
            iam_tasks = [] if reuse else [asyncio.create_task(self._iam(sessions, t)) for t in self.targets]
            scope_tasks = (
                []
                if self.claim is not None
                else [asyncio.create_task(self._scope(sessions, t, r)) for t in self.targets for r in t.regions]
            )
            try:
                await asyncio.gather(*iam_tasks)
                self.audit_scope = (
                    self.cached_scope
                    if reuse
                    else AuditScope(
                        self.principals,
                        audited_accounts=[t.account for t in self.targets if t.account not in self.iam_failures],
                        trusted_accounts=[*self.config.trust.accounts, *(t.account for t in self.targets)],
                        organization=self.organization,
                    )
                )
                if self.claim is not None:
                    async for result in self._claimed(sessions):
                        self._tick("scopes")
                        yield result
                for next_done in asyncio.as_completed(scope_tasks):
                    result = await next_done
                    self._tick("scopes")
                    yield result
            finally:
                for task in [*iam_tasks, *scope_tasks]:
                    task.cancel()
                await asyncio.gather(*iam_tasks, *scope_tasks, return_exceptions=True)
                for account, check in list(self._identities.items()):
                    if not check.done():
                        check.cancel()
                    elif not check.cancelled() and check.exception() is not None:
                        self._identities.pop(account)  # a failure is not kept for the next re-read
                        if self.reuse is not None:
                            self.reuse.sessions.forget(account)

    @property
    def rereads(self) -> bool:
        """An event's re-read: some scopes (or some keys of them), the rest carried over."""
        return self._reread or (self.only is not None and any(keys is not None for keys in self.only.values()))

    @property
    def expected(self) -> frozenset[tuple[str, str]]:
        """Every scope the snapshot must account for: each target's regions."""
        return frozenset((t.account, r) for t in self.targets for r in t.regions)

    @property
    def scope_count(self) -> int:
        return sum(len(t.regions) for t in self.targets)
