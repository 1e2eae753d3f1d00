"""A small AWS-protocol proxy in front of moto, on loopback, for what moto does not do itself.

- `page_size`: split ListKeys, ListAliases, ListGrants, ListResourceTags and
  GetAccountAuthorizationDetails answers into pages with markers (moto ignores page sizes);
- `deny_assume`: answer AccessDenied to AssumeRole into these accounts;
- `vanish`: answer NotFoundException for per-key reads of these key ids (deleted mid-scan);
- `deny_key_policy`: answer AccessDeniedException to DescribeKey and GetKeyPolicy of these keys;
- `deny_operations`: answer AccessDenied to these operations (e.g. DescribeOrganization);
- `reorder_policies`: answer GetKeyPolicy with the same policy in a new order on every call —
  statements, lists and object keys shuffled, re-indented with KMS's `" : "` (aws-cli#9456);
- `fail_keys`: answer HTTP 500 to every per-key read of these key ids (retries never help);
- `latency`: seconds added to every request (a central auditor far from its regions);
- `quotas`: requests/s per (credentials, region, operation), metered as AWS does: a token bucket
  refilled at that rate and holding one second's worth; ThrottlingException when it is empty;
- `stall`: operations held up to that many seconds (or until removed from `stall`), then answered
  500 without reaching moto: a request lost with the process that waited on it (the SQS delete
  after a snapshot, issue #17). Recorded in `stalled`.
- `fail_rate`, `fail_operations`, `fail_codes`: answer a seeded random `fail_rate` of these
  operations with one of these errors (`KMSInternalException`: HTTP 500, which botocore retries;
  `AccessDeniedException`: 400, which it does not), without reaching moto (bench/soak_events.py:
  re-reads that fail). Counted in `injected`.

It records every (service, operation) it forwards. Also used by bench/scan.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web

KMS_PAGED = {"ListKeys": "Keys", "ListAliases": "Aliases", "ListGrants": "Grants", "ListResourceTags": "Tags"}
PER_KEY = {"DescribeKey", "GetKeyPolicy", "ListGrants", "ListResourceTags"}
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
REST_OPERATIONS = {
    ("securityhub", "POST", "/findings/import"): "BatchImportFindings",
    ("securityhub", "POST", "/findings"): "GetFindings",
}
IAM_LISTS = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")
_SCOPE = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"__type": code, "message": message}).encode(),
        content_type="application/x-amz-json-1.1",
    )


def query_error(status: int, code: str, message: str) -> web.Response:
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>x</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, body=body.encode(), content_type="text/xml")


def kms_layout(doc: Any, rnd: random.Random) -> str:
    """A policy as GetKeyPolicy returns it on any one call (aws-cli#9456): statements, lists and
    object keys in a new order, in KMS's layout."""

    def shuffled(value: Any) -> Any:
        if isinstance(value, dict):
            items = [(k, shuffled(v)) for k, v in value.items()]
            rnd.shuffle(items)
            return dict(items)
        if isinstance(value, list):
            items = [shuffled(v) for v in value]
            rnd.shuffle(items)
            return items
        return value

    return json.dumps(shuffled(doc), indent=2, separators=(",", " : "))


def kms_order(seed: int) -> Callable[[Any], str]:
    """`kms_layout` with its own seeded order, for a policy given as a document or as its text."""
    rnd = random.Random(seed)
    return lambda doc: kms_layout(json.loads(doc) if isinstance(doc, str) else doc, rnd)


def like_real_kms(upstream: str, monkeypatch: Any) -> Iterator[str]:
    """For a pytest fixture: every request through a proxy that answers as real KMS does
    (DESIGN.md): each key policy in a new order and layout, and lists in pages of two (issue #14)."""
    proxy = AwsProxy(upstream, reorder_policies=True, page_size=2)
    url = proxy.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    proxy.stop()


class AwsProxy:
    def __init__(
        self,
        upstream: str,
        *,
        page_size: int | None = None,
        deny_assume: set[str] | None = None,
        vanish: set[str] | None = None,
        deny_key_policy: set[str] | None = None,
        deny_operations: set[str] | None = None,
        reorder_policies: bool = False,
        fail_keys: set[str] | None = None,
        latency: float = 0.0,
        quotas: dict[str, float] | None = None,
        fail_rate: float = 0.0,
        fail_operations: set[str] | None = None,
        fail_codes: tuple[str, ...] = ("KMSInternalException",),
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.page_size = page_size
        self.deny_assume = deny_assume or set()
        self.vanish = vanish or set()
        self.deny_key_policy = deny_key_policy or set()
        self.deny_operations = deny_operations or set()
        self.reorder_policies = reorder_policies
        self.fail_keys = fail_keys or set()
        self._shuffler = random.Random(20261127)
        self.latency = latency
        self.stall: dict[str, float] = {}
        self.stalled: list[str] = []
        self.quotas = quotas or {}
        self.fail_rate = fail_rate
        self.fail_operations = fail_operations or set()
        self.fail_codes = fail_codes
        self._failer = random.Random(20261203)
        self.injected: dict[str, int] = {}  # "operation code" -> failures answered
        self.operations: list[tuple[str, str]] = []
        self.params: list[tuple[str, dict[str, Any]]] = []  # (operation, its parameters) as received
        self.in_flight: dict[str, int] = {}  # operation -> requests being answered now
        self.max_in_flight: dict[str, int] = {}  # and the most at once
        self.throttled = 0
        self.throttled_by_operation: dict[str, int] = {}
        self._buckets: dict[tuple[str, str, str], list[float]] = {}  # (tokens, when last refilled)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.url

    async def _start(self) -> None:
        self._client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A request held open (an SQS long poll) must not hold up the stop: 1 s, not aiohttp's 60
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        async def _stop() -> None:
            await self._runner.cleanup()
            await self._client.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- requests --------------------------------------------------------------------------
    @staticmethod
    def _identify(request: web.Request, body: bytes) -> tuple[str, str, str, str, dict[str, Any]]:
        scope = _SCOPE.search(request.headers.get("Authorization", ""))
        key_id, region, service = scope.groups() if scope else ("", "", "")
        target = request.headers.get("X-Amz-Target", "")
        if target:
            params = json.loads(body or b"{}")
            return service, target.split(".", 1)[1], key_id, region, params
        rest = REST_OPERATIONS.get((service, request.method, request.path))
        if rest:  # REST-JSON services (Security Hub): the operation is the path
            return service, rest, key_id, region, json.loads(body or b"{}")
        form = dict(urllib.parse.parse_qsl(body.decode()))
        return service, form.get("Action", ""), key_id, region, form

    def _over_quota(self, key_id: str, region: str, operation: str) -> bool:
        rate = self.quotas.get(operation)
        if not rate:
            return False
        capacity = max(1.0, rate)
        now = time.monotonic()
        bucket = self._buckets.setdefault((key_id, region, operation), [capacity, now])
        bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] < 1.0:
            return True
        bucket[0] -= 1.0
        return False

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._client.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as response:
            data = await response.read()
            out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
            return response.status, out, data

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = self._identify(request, body)[1]
        self.in_flight[operation] = self.in_flight.get(operation, 0) + 1
        self.max_in_flight[operation] = max(self.max_in_flight.get(operation, 0), self.in_flight[operation])
        try:
            return await self._answer(request, body)
        finally:
            self.in_flight[operation] -= 1

    async def _answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        service, operation, key_id, region, params = self._identify(request, body)
        if self.latency:
            await asyncio.sleep(self.latency)
        if operation in self.stall:
            self.stalled.append(operation)
            deadline = time.monotonic() + self.stall[operation]
            while operation in self.stall and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return json_error(500, "InternalError", "stalled request dropped")
        if self._over_quota(key_id, region, operation):
            self.throttled += 1
            self.throttled_by_operation[operation] = self.throttled_by_operation.get(operation, 0) + 1
            return json_error(400, "ThrottlingException", "Rate exceeded")
        if self.fail_rate and operation in self.fail_operations and self._failer.random() < self.fail_rate:
            code = self._failer.choice(self.fail_codes)
            self.injected[f"{operation} {code}"] = self.injected.get(f"{operation} {code}", 0) + 1
            return json_error(500 if "Internal" in code else 400, code, f"injected failure of {operation}")
        self.operations.append((service, operation))
        self.params.append((operation, dict(params)))
        if operation in self.deny_operations:
            if request.headers.get("X-Amz-Target") or operation in REST_OPERATIONS.values():
                return json_error(400, "AccessDeniedException", f"not authorized to perform {operation}")
            return query_error(403, "AccessDenied", f"not authorized to perform {operation}")
        if operation == "AssumeRole" and any(f"::{a}:" in params.get("RoleArn", "") for a in self.deny_assume):
            return query_error(403, "AccessDenied", "not authorized to perform sts:AssumeRole")
        if operation in PER_KEY:
            key = str(params.get("KeyId", "")).rsplit("/", 1)[-1]
            if key in self.vanish:
                return json_error(400, "NotFoundException", f"Key '{key}' does not exist")
            if operation in ("GetKeyPolicy", "DescribeKey") and key in self.deny_key_policy:
                return json_error(400, "AccessDeniedException", f"not authorized to perform kms:{operation}")
            if key in self.fail_keys:
                return json_error(500, "KMSInternalException", "internal error")
        if self.page_size and operation in KMS_PAGED:
            return await self._kms_page(request, params, operation)
        if self.page_size and operation == "GetAccountAuthorizationDetails":
            return await self._iam_page(request, params)
        try:
            status, headers, data = await self._forward(request, body)
        except aiohttp.ClientError as exc:  # the upstream went away: AWS would answer 503 too
            return json_error(503, "ServiceUnavailableException", f"upstream unreachable: {exc}")
        if self.reorder_policies and operation == "GetKeyPolicy" and status == 200:
            data = self._reordered(data)
        return web.Response(status=status, headers=headers, body=data)

    def _reordered(self, data: bytes) -> bytes:
        answer = json.loads(data)
        try:
            policy = json.loads(answer["Policy"])
        except (KeyError, ValueError):
            return data  # not JSON (moto stores any text): returned as it is, as KMS would
        answer["Policy"] = kms_layout(policy, self._shuffler)
        return json.dumps(answer).encode()

    async def _kms_page(self, request: web.Request, params: dict[str, Any], operation: str) -> web.Response:
        start = int(params.pop("Marker", 0) or 0)
        params.pop("Limit", None)
        status, headers, data = await self._forward(request, json.dumps(params).encode())
        if status != 200:
            return web.Response(status=status, headers=headers, body=data)
        answer = json.loads(data)
        items = answer.get(KMS_PAGED[operation], [])
        assert self.page_size is not None
        end = start + self.page_size
        answer[KMS_PAGED[operation]] = items[start:end]
        answer["Truncated"] = end < len(items)
        answer.pop("NextMarker", None)
        if end < len(items):
            answer["NextMarker"] = str(end)
        return web.Response(status=200, headers=headers, body=json.dumps(answer).encode())

    async def _iam_page(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        start = int(params.pop("Marker", 0) or 0)
        params.pop("MaxItems", None)
        status, headers, data = await self._forward(request, urllib.parse.urlencode(params).encode())
        if status != 200:
            return web.Response(status=status, headers=headers, body=data)
        ET.register_namespace("", IAM_NS)
        root = ET.fromstring(data)
        result = root.find(f"{{{IAM_NS}}}GetAccountAuthorizationDetailsResult")
        assert result is not None and self.page_size is not None
        members = []
        for name in IAM_LISTS:
            parent = result.find(f"{{{IAM_NS}}}{name}")
            if parent is not None:
                members.extend((parent, child) for child in list(parent))
        end = start + self.page_size
        for parent, child in members[:start] + members[end:]:
            parent.remove(child)
        for tag in ("IsTruncated", "Marker"):
            for element in result.findall(f"{{{IAM_NS}}}{tag}"):
                result.remove(element)
        ET.SubElement(result, f"{{{IAM_NS}}}IsTruncated").text = "true" if end < len(members) else "false"
        if end < len(members):
            ET.SubElement(result, f"{{{IAM_NS}}}Marker").text = str(end)
        return web.Response(status=200, headers=headers, body=ET.tostring(root, xml_declaration=False))


def main() -> None:
    """Run as its own process (bench/scan.py): prints its URL, serves until killed."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--quotas", default="", help="JSON object: operation -> requests/s")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of --fail-operations answered an error")
    parser.add_argument("--fail-operations", default="", help="comma-separated, e.g. GetKeyPolicy")
    parser.add_argument("--fail-codes", default="KMSInternalException", help="comma-separated error codes")
    args = parser.parse_args()
    proxy = AwsProxy(
        args.upstream,
        latency=args.latency,
        quotas=json.loads(args.quotas) if args.quotas else None,
        fail_rate=args.fail_rate,
        fail_operations={o for o in args.fail_operations.split(",") if o},
        fail_codes=tuple(c for c in args.fail_codes.split(",") if c),
    )
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # the proxy thread inherits it
    print(proxy.start(), flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    summary = {"forwarded": len(proxy.operations), "throttled": proxy.throttled_by_operation}
    if proxy.fail_rate:
        summary["injected"] = proxy.injected
    print(json.dumps(summary), flush=True)
    proxy.stop()


if __name__ == "__main__":
    main()
