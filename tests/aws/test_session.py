"""Per-account AssumeRole credentials are refreshed before expiry (a daemon runs for weeks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from awsproxy import AwsProxy
from estate import A

from kmsaudit.collect.session import Sessions
from kmsaudit.config.settings import ScanSettings
from kmsaudit.errors import AccessDenied


async def test_assumed_credentials_refresh_before_they_expire(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = AwsProxy(aws)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        async with Sessions(ScanSettings()) as sessions:
            session = await sessions.for_account(A, f"arn:aws:iam::{A}:role/KmsAuditReadOnly", "ext-id")
            kms = await sessions.client(session, "kms", "us-east-1")
            await kms.list_keys()
            assert [op for _, op in proxy.operations].count("AssumeRole") == 1
            # Five minutes before expiry, inside botocore's mandatory refresh window:
            session._credentials._expiry_time = datetime.now(UTC) + timedelta(minutes=5)
            await kms.list_keys()
            assert [op for _, op in proxy.operations].count("AssumeRole") == 2
            assert session._credentials._expiry_time > datetime.now(UTC) + timedelta(minutes=30)
    finally:
        proxy.stop()


async def test_a_role_that_cannot_be_assumed_is_a_collect_error(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = AwsProxy(aws, deny_assume={A})
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        async with Sessions(ScanSettings()) as sessions:
            with pytest.raises(AccessDenied, match=f"AssumeRole arn:aws:iam::{A}:role/KmsAuditReadOnly"):
                await sessions.for_account(A, f"arn:aws:iam::{A}:role/KmsAuditReadOnly", None)
    finally:
        proxy.stop()


async def test_concurrent_callers_of_one_account_share_one_assume_role(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #19.4: the IAM task and every region task of an account ask for its session at once;
    one AssumeRole (and one session) must serve them all, not one each."""
    import asyncio

    proxy = AwsProxy(aws, latency=0.05)  # the answer takes a while, as AWS's does
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        async with Sessions(ScanSettings()) as sessions:
            role = f"arn:aws:iam::{A}:role/KmsAuditReadOnly"
            got = await asyncio.gather(*(sessions.for_account(A, role, None) for _ in range(5)))
            assert len({id(s) for s in got}) == 1
            assert [op for _, op in proxy.operations].count("AssumeRole") == 1
    finally:
        proxy.stop()


async def test_a_failed_assume_role_fails_every_waiting_caller_once(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    proxy = AwsProxy(aws, deny_assume={A}, latency=0.05)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        async with Sessions(ScanSettings()) as sessions:
            role = f"arn:aws:iam::{A}:role/KmsAuditReadOnly"
            results = await asyncio.gather(
                *(sessions.for_account(A, role, None) for _ in range(4)), return_exceptions=True
            )
            assert all(isinstance(r, AccessDenied) for r in results)
            assert [op for _, op in proxy.operations].count("AssumeRole") == 1
    finally:
        proxy.stop()


async def test_a_long_lived_session_assumes_a_failed_role_again_once_forgotten(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's event consumer keeps its sessions for weeks: one AssumeRole refused while AWS
    was unreachable must not fail every later read until a restart (within a scan, the failure
    is shared by every task of the account: single-flight)."""
    proxy = AwsProxy(aws, deny_assume={A})
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    role = f"arn:aws:iam::{A}:role/KmsAuditReadOnly"
    try:
        async with Sessions(ScanSettings()) as sessions:
            with pytest.raises(AccessDenied):
                await sessions.for_account(A, role, None)
            proxy.deny_assume = set()
            with pytest.raises(AccessDenied):
                await sessions.for_account(A, role, None)  # still the same failure: single-flight
            sessions.forget(A)
            session = await sessions.for_account(A, role, None)
            await (await sessions.client(session, "kms", "us-east-1")).list_keys()
    finally:
        proxy.stop()


async def test_accounts_share_one_loader_of_service_models(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #18: each account's session reads the KMS, STS and IAM models from the one loader,
    so they are parsed once per scan, not once per account (0.1 s of CPU each; hundreds of
    accounts in an organization). The second account's clients read no model file."""
    from botocore.loaders import JSONFileLoader
    from estate import B

    proxy = AwsProxy(aws)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    reads: list[str] = []
    original = JSONFileLoader.load_file

    def counting(self: JSONFileLoader, file_path: str) -> object:
        reads.append(file_path)
        return original(self, file_path)

    monkeypatch.setattr(JSONFileLoader, "load_file", counting)
    try:
        async with Sessions(ScanSettings()) as sessions:
            for account in (A, B):
                session = await sessions.for_account(account, f"arn:aws:iam::{account}:role/KmsAuditReadOnly", None)
                before = len(reads)
                kms = await sessions.client(session, "kms", "us-east-1")
                await kms.list_keys()
                if account == A:
                    assert any("kms" in path for path in reads[before:])  # read once, here
                else:
                    assert reads[before:] == [], "the second account read service models again"
    finally:
        proxy.stop()


async def test_every_account_shares_one_sts_client_and_one_tls_context(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #18: the roles of all accounts are assumed through one STS client, and every client
    of the process shares one TLS context (the CA bundle read once, not 16 ms of CPU per client:
    an organization's scan has a client per account × region)."""
    import asyncio

    from aiobotocore.httpsession import AIOHTTPSession
    from estate import B, C

    from kmsaudit.collect.session import OneTlsContext

    proxy = AwsProxy(aws, latency=0.02)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    built: list[object] = []
    original = AIOHTTPSession._build_verify_context

    def counting(self: AIOHTTPSession) -> object:
        built.append(self)
        return original(self)

    monkeypatch.setattr(AIOHTTPSession, "_build_verify_context", counting)
    monkeypatch.setattr(OneTlsContext, "_contexts", {})
    created: list[str] = []
    try:
        async with Sessions(ScanSettings()) as sessions:
            real_create = sessions.base.create_client

            def spy(service: str, *args: object, **kwargs: object) -> object:
                created.append(service)
                return real_create(service, *args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(sessions.base, "create_client", spy)
            got = await asyncio.gather(
                *(sessions.for_account(a, f"arn:aws:iam::{a}:role/KmsAuditReadOnly", None) for a in (A, B, C))
            )
            for session in got:
                for region in ("us-east-1", "eu-west-1"):
                    await (await sessions.client(session, "kms", region)).list_keys()
        assert created == ["sts"]  # one client assumed all three roles
        assert [op for _, op in proxy.operations].count("AssumeRole") == 3
        assert len(built) == 1  # 7 clients, one TLS context
    finally:
        proxy.stop()


async def test_adopted_credentials_are_refreshed_by_assuming_the_role(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #18: a worker process reads with the credentials the scan's process assumed; when
    they near expiry (a long scan), the worker assumes the role itself, once."""
    from datetime import UTC, datetime, timedelta

    proxy = AwsProxy(aws)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    role = f"arn:aws:iam::{A}:role/KmsAuditReadOnly"
    try:
        async with Sessions(ScanSettings()) as parent:
            await parent.for_account(A, role, None)
            handed = parent.handed_over([A])
        assert set(handed) == {A}
        async with Sessions(ScanSettings()) as worker:
            session = worker.adopt(A, role, None, handed[A])
            assert await worker.for_account(A, role, None) is session  # no AssumeRole for it
            kms = await worker.client(session, "kms", "us-east-1")
            await kms.list_keys()
            assert [op for _, op in proxy.operations].count("AssumeRole") == 1  # the parent's
            session._credentials._expiry_time = datetime.now(UTC) + timedelta(minutes=5)
            await kms.list_keys()
            assert [op for _, op in proxy.operations].count("AssumeRole") == 2
    finally:
        proxy.stop()
