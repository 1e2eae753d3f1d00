"""Every test here runs against a wiped moto (tests/estate.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from awsproxy import AwsProxy
from estate import aws, estate  # noqa: F401  (fixtures)


@pytest.fixture
def proxy(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsProxy]:  # noqa: F811
    """The test proxy (tests/awsproxy.py) between kmsaudit and moto: AWS_ENDPOINT_URL points at it."""
    p = AwsProxy(aws)
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.start())
    yield p
    p.stop()
