"""Per-account AssumeRole credentials are refreshed before expiry (a daemon runs for weeks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from awsproxy import AwsProxy
from estate import A

from kmsaudit.collect.session import Sessions
from kmsaudit.config import ScanSettings
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
