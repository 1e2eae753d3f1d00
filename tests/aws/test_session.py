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
