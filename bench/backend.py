"""A cheap AWS for benchmarks (issue #18): canned, correct answers to what a scan sends — STS
AssumeRole and GetCallerIdentity, IAM GetAccountAuthorizationDetails, KMS ListKeys, ListAliases,
DescribeKey, GetKeyPolicy, ListGrants, ListResourceTags — for an estate of `--keys` keys in every
account and region asked about, with policies of a realistic size. It costs a fraction of moto's
CPU per request, so what a benchmark measures is the client: HTTP/1.1 keep-alive on a bare asyncio
protocol, and every answer built once and kept (an aiohttp application cost 0.14 ms of CPU a
request, a sixth of the client's; on a 2-core machine that is CPU the client processes lose).
Not a test double: bench only.

    python bench/backend.py --keys-per-scope 250   # prints its URL, serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import uuid
from urllib.parse import unquote_plus

from evaluator import ADMIN, USE  # bench/evaluator.py: the same realistic statements

_SCOPE = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/")
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
DEFAULT_ACCOUNT = "123456789012"


def account_of(access_key: str) -> str:
    """Credentials this backend hands out carry their account: ASIA + 12 digits."""
    return access_key[4:16] if access_key.startswith("ASIA") and access_key[4:16].isdigit() else DEFAULT_ACCOUNT


def key_id(account: str, region: str, i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{account}/{region}/{i}"))


def policy(account: str, i: int) -> str:
    """About 1.5 kB, as a real key policy: the account, an admin role, a partner, a condition."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": f"key-policy-{i}",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "Allow access for Key Administrators",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:role/KeyAdmin"},
                    "Action": ADMIN,
                    "Resource": "*",
                },
                {
                    "Sid": "Allow a partner to use the key",
                    "Effect": "Allow",
                    "Principal": {"AWS": [f"arn:aws:iam::{(int(account) + 1) % 10**12:012d}:root"]},
                    "Action": USE,
                    "Resource": "*",
                },
                {
                    "Sid": "Allow attachment of persistent resources",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:role/App{i % 7}"},
                    "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
                    "Resource": "*",
                    "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
                },
            ],
        }
    )


Answer = tuple[int, bytes, bytes]  # status, content type, body
XML = b"text/xml"
AMZ_JSON = b"application/x-amz-json-1.1"


class Backend:
    def __init__(self, keys_per_scope: int) -> None:
        self.n = keys_per_scope
        self.requests = 0
        self.cache: dict[tuple[str, ...], Answer] = {}

    def answer(self, authorization: str, target: str, body: bytes) -> Answer:
        self.requests += 1
        scope = _SCOPE.search(authorization)
        access_key, region, service = scope.groups() if scope else ("", "us-east-1", "")
        account = account_of(access_key)
        if target.startswith("TrentService."):
            operation = target.split(".", 1)[1]
            key = ""
            if operation in ("DescribeKey", "GetKeyPolicy", "ListGrants", "ListResourceTags"):
                key = str(json.loads(body or b"{}").get("KeyId", "")).rsplit("/", 1)[-1]
            memo = (operation, account, region, key)
            found = self.cache.get(memo)
            if found is None:
                found = self.cache[memo] = self.kms(operation, key, account, region)
            return found
        form = {k: unquote_plus(v) for k, v in (p.split("=", 1) for p in body.decode().split("&") if "=" in p)}
        action = form.get("Action", "")
        if service == "sts" and action == "AssumeRole":
            role = form.get("RoleArn", "")
            target_account = role.split(":")[4] if role.count(":") >= 5 else DEFAULT_ACCOUNT
            xml = (
                f'<AssumeRoleResponse xmlns="{STS_NS}"><AssumeRoleResult><Credentials>'
                f"<AccessKeyId>ASIA{target_account}ABCD</AccessKeyId><SecretAccessKey>secret</SecretAccessKey>"
                f"<SessionToken>token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>"
                f"<AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:kmsaudit</AssumedRoleId>"
                f"<Arn>arn:aws:sts::{target_account}:assumed-role/KmsAuditReadOnly/kmsaudit</Arn></AssumedRoleUser>"
                f"</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"
            )
            return 200, XML, xml.encode()
        if service == "sts" and action == "GetCallerIdentity":
            xml = (
                f'<GetCallerIdentityResponse xmlns="{STS_NS}"><GetCallerIdentityResult>'
                f"<Arn>arn:aws:sts::{account}:assumed-role/KmsAuditReadOnly/kmsaudit</Arn>"
                f"<UserId>AROAEXAMPLE:kmsaudit</UserId><Account>{account}</Account></GetCallerIdentityResult>"
                f"<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
            )
            return 200, XML, xml.encode()
        if service == "iam" and action == "GetAccountAuthorizationDetails":
            xml = (
                f'<GetAccountAuthorizationDetailsResponse xmlns="{IAM_NS}"><GetAccountAuthorizationDetailsResult>'
                "<UserDetailList/><GroupDetailList/><RoleDetailList/><Policies/><IsTruncated>false</IsTruncated>"
                "</GetAccountAuthorizationDetailsResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
                "</GetAccountAuthorizationDetailsResponse>"
            )
            return 200, XML, xml.encode()
        return 400, b"text/plain", b"unknown operation"

    def kms(self, operation: str, kid: str, account: str, region: str) -> Answer:
        def arn(kid: str) -> str:
            return f"arn:aws:kms:{region}:{account}:key/{kid}"

        if operation == "ListKeys":
            ids = [key_id(account, region, i) for i in range(self.n)]
            out: dict[str, object] = {"Keys": [{"KeyId": k, "KeyArn": arn(k)} for k in ids], "Truncated": False}
        elif operation in ("ListAliases", "ListResourceTags", "ListGrants"):
            field = {"ListAliases": "Aliases", "ListResourceTags": "Tags", "ListGrants": "Grants"}[operation]
            out = {field: [], "Truncated": False}
        elif operation == "DescribeKey":
            out = {
                "KeyMetadata": {
                    "AWSAccountId": account,
                    "KeyId": kid,
                    "Arn": arn(kid),
                    "CreationDate": 1.7e9,
                    "Enabled": True,
                    "KeyUsage": "ENCRYPT_DECRYPT",
                    "KeyState": "Enabled",
                    "Origin": "AWS_KMS",
                    "KeyManager": "CUSTOMER",
                    "KeySpec": "SYMMETRIC_DEFAULT",
                    "MultiRegion": False,
                }
            }
        elif operation == "GetKeyPolicy":
            out = {"Policy": policy(account, int(kid[:4], 16) % 1000), "PolicyName": "default"}
        else:
            return 400, AMZ_JSON, b'{"__type": "UnsupportedOperationException"}'
        return 200, AMZ_JSON, json.dumps(out).encode()


REASONS = {200: b"OK", 400: b"Bad Request"}


class Http(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, as much of it as botocore speaks: a request line, headers, a body
    of Content-Length bytes (never chunked for these operations)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            headers: dict[bytes, bytes] = {}
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            status, content_type, payload = self.backend.answer(
                headers.get(b"authorization", b"").decode(), headers.get(b"x-amz-target", b"").decode(), body
            )
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nx-amzn-RequestId: 1\r\n\r\n%s"
                % (status, REASONS.get(status, b"Error"), content_type, len(payload), payload)
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys-per-scope", type=int, default=250)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    backend = Backend(args.keys_per_scope)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: Http(backend), "127.0.0.1", args.port, backlog=1024))
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.run_until_complete(stop.wait())
    print(json.dumps({"requests": backend.requests}), flush=True)
    server.close()


if __name__ == "__main__":
    main()
