"""An aiohttp proxy between aiobotocore and moto that breaks requests on purpose (issue #7).

Faults, drawn per request from a seeded random generator:

- `throttle`: HTTP 400 `ThrottlingException` (KMS, JSON) or `Throttling` (IAM/STS, XML);
- `500` / `503`: `InternalFailure` / `ServiceUnavailable`;
- `reset`: the connection is aborted before any answer;
- `slow`: the answer comes later than the client's read timeout;
- `truncated`: the real answer's headers and half its body, then the connection is aborted.

Two kinds of plan:

- *transient* faults (`rates`): each request fingerprint (operation + parameters + caller) is
  faulted at most `max_consecutive` times in a row, so retries that allow more attempts than
  that must absorb every one;
- *persistent* faults (`persistent`): every request matching a rule fails the same way, so no
  retry can absorb it and the scope (or the account's IAM) must be reported failed.

The counters (`injected`, `requests`) feed bench/faults.py's report.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from awsproxy import AwsProxy, json_error, query_error

KINDS = ("throttle", "500", "503", "reset", "slow", "truncated")

# (service, operation, account of the caller's assumed role or "", region, params) -> bool
Match = Callable[[str, str, str, str, dict[str, Any]], bool]
_CREDENTIAL = re.compile(rb"<(AccessKeyId|SecretAccessKey|SessionToken)>([^<]+)</")


@dataclass
class Rule:
    """Persistent: every request `match` accepts fails with `kind`."""

    kind: str
    match: Match
    hits: int = 0


@dataclass
class Plan:
    rates: dict[str, float] = field(default_factory=dict)  # kind -> probability per request
    max_consecutive: int = 3
    persistent: list[Rule] = field(default_factory=list)
    slow_seconds: float = 2.6
    seed: int = 7


class FaultProxy(AwsProxy):
    def __init__(self, upstream: str, plan: Plan, **kwargs: Any) -> None:
        super().__init__(upstream, **kwargs)
        self.plan = plan
        self.random = random.Random(plan.seed)
        self.streak: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.account_of: dict[str, str] = {}  # access key id of an assumed role -> its account
        self.secrets_issued: set[str] = set()  # secret keys and session tokens AssumeRole handed out

    def _draw(self, fingerprint: str) -> str | None:
        if self.streak[fingerprint] >= self.plan.max_consecutive:
            return None
        roll = self.random.random()
        for kind in KINDS:
            rate = self.plan.rates.get(kind, 0.0)
            if roll < rate:
                return kind
            roll -= rate
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        service, operation, access_key, region, params = self._identify(request, body)
        account = self.account_of.get(access_key, "")
        self.requests += 1
        kind = None
        for rule in self.plan.persistent:
            if rule.match(service, operation, account, region, params):
                rule.hits += 1
                kind = rule.kind
                break
        if kind is None:
            fingerprint = hashlib.sha256(access_key.encode() + request.path_qs.encode() + body).hexdigest()
            kind = self._draw(fingerprint)
            if kind is None:
                self.streak.pop(fingerprint, None)
            else:
                self.streak[fingerprint] += 1
        if kind is None:
            response = await super()._handle(request)  # AwsProxy reads the body from aiohttp's cache
            if operation == "AssumeRole" and isinstance(response, web.Response) and isinstance(response.body, bytes):
                for name, value in _CREDENTIAL.findall(response.body):
                    if name == b"AccessKeyId":
                        self.account_of[value.decode()] = str(params.get("RoleArn", "")).split(":")[4]
                    else:
                        self.secrets_issued.add(value.decode())
            return response
        self.injected[kind] += 1
        return await self._fault(kind, request, json_protocol=bool(request.headers.get("X-Amz-Target")))

    async def _fault(self, kind: str, request: web.Request, *, json_protocol: bool) -> web.StreamResponse:
        error = json_error if json_protocol else query_error
        if kind == "throttle":
            return error(400, "ThrottlingException" if json_protocol else "Throttling", "Rate exceeded")
        if kind == "500":
            return error(500, "InternalFailure", "injected internal error")
        if kind == "503":
            return error(503, "ServiceUnavailable", "injected unavailability")
        if kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more is written on an aborted connection
        if kind == "truncated":
            status, headers, data = await self._forward(request, await request.read())
            partial = web.StreamResponse(status=status, headers={**headers, "Content-Length": str(len(data))})
            await partial.prepare(request)
            await partial.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if kind == "slow":
            await asyncio.sleep(self.plan.slow_seconds)
            return await super()._handle(request)  # too late: the client has given up
        raise ValueError(kind)
