"""botocore and aiohttp exceptions → kmsaudit's own (no botocore exception leaves collect/)."""

from __future__ import annotations

import asyncio

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.parsers import ResponseParserError

from kmsaudit.errors import AccessDenied, CollectError, Throttled

THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "LimitExceededException",
    }
)
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
        "AWSOrganizationsNotInUseException",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "RequestExpired",
    }
)
MISSING_CODES = frozenset({"NotFoundException", "NoSuchEntity", "KMSInvalidStateException"})


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "") or "ClientError")
    return type(exc).__name__


def is_missing(exc: BaseException) -> bool:
    """The resource went away between listing and reading it (a key deleted mid-scan)."""
    return isinstance(exc, ClientError) and error_code(exc) in MISSING_CODES


def convert(exc: BaseException, operation: str) -> CollectError:
    """One clear CollectError with a short code for metrics and the scope's status."""
    if isinstance(exc, CollectError):
        return exc
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))[:200]
        text = f"{operation}: {code}{': ' + message if message else ''}"
        if code in DENIED_CODES:
            return AccessDenied(text)
        if code in THROTTLE_CODES:
            return Throttled(f"{text} (still throttled after every retry)")
        if code in CREDENTIAL_CODES:
            return CollectError(text, code="credentials")
        return CollectError(text, code="aws-error")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return CollectError(f"{operation}: no AWS credentials found", code="credentials")
    if isinstance(exc, NoRegionError):
        return CollectError(f"{operation}: no region", code="config")
    # Before the network errors: on Python 3.11 a TimeoutError is an OSError, and botocore's
    # timeouts are connection errors, but a timeout is what it is (issue #19).
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ReadTimeoutError | ConnectTimeoutError):
        return CollectError(f"{operation}: timed out", code="timeout")
    if isinstance(exc, ResponseParserError):
        return CollectError(
            f"{operation}: the endpoint answered something that is not an AWS response", code="bad-response"
        )
    if isinstance(exc, BotoConnectionError | HTTPClientError | aiohttp.ClientError | OSError):
        return CollectError(f"{operation}: network error: {type(exc).__name__}", code="network")
    if isinstance(exc, BotoCoreError):
        return CollectError(f"{operation}: {type(exc).__name__}: {str(exc)[:200]}", code="botocore")
    return CollectError(f"{operation}: unexpected {type(exc).__name__}: {str(exc)[:200]}", code="unexpected")
