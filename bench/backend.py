"""A cheap AWS for benchmarks (issue #18): canned, correct answers to what a scan sends — STS
AssumeRole and GetCallerIdentity, IAM GetAccountAuthorizationDetails, KMS ListKeys, ListAliases,
DescribeKey, GetKeyPolicy, ListGrants, ListResourceTags — for an estate of `--keys` keys in every
account and region asked about, with policies of a realistic size. It costs a fraction of moto's
CPU per request, so what a benchmark measures is the client. Not a test double: bench only.

    python bench/backend.py --keys-per-scope 250   # prints its URL, serves until killed
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import uuid

from aiohttp import web
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


def _xml(text: str) -> web.Response:
    return web.Response(body=text.encode(), content_type="text/xml")


class Backend:
    def __init__(self, keys_per_scope: int) -> None:
        self.n = keys_per_scope
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        scope = _SCOPE.search(request.headers.get("Authorization", ""))
        access_key, region, service = scope.groups() if scope else ("", "us-east-1", "")
        account = account_of(access_key)
        target = request.headers.get("X-Amz-Target", "")
        if target.startswith("TrentService."):
            return self.kms(target.split(".", 1)[1], json.loads(body or b"{}"), account, region)
        form = dict(p.split("=", 1) for p in body.decode().split("&") if "=" in p)
        action = form.get("Action", "")
        if service == "sts" and action == "AssumeRole":
            role = form.get("RoleArn", "").replace("%3A", ":").replace("%2F", "/")
            target_account = role.split(":")[4] if role.count(":") >= 5 else DEFAULT_ACCOUNT
            xml = (
                f'<AssumeRoleResponse xmlns="{STS_NS}"><AssumeRoleResult><Credentials>'
                f"<AccessKeyId>ASIA{target_account}ABCD</AccessKeyId><SecretAccessKey>secret</SecretAccessKey>"
                f"<SessionToken>token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>"
                f"<AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:kmsaudit</AssumedRoleId>"
                f"<Arn>arn:aws:sts::{target_account}:assumed-role/KmsAuditReadOnly/kmsaudit</Arn></AssumedRoleUser>"
                f"</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"
            )
            return _xml(xml)
        if service == "sts" and action == "GetCallerIdentity":
            xml = (
                f'<GetCallerIdentityResponse xmlns="{STS_NS}"><GetCallerIdentityResult>'
                f"<Arn>arn:aws:sts::{account}:assumed-role/KmsAuditReadOnly/kmsaudit</Arn>"
                f"<UserId>AROAEXAMPLE:kmsaudit</UserId><Account>{account}</Account></GetCallerIdentityResult>"
                f"<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
            )
            return _xml(xml)
        if service == "iam" and action == "GetAccountAuthorizationDetails":
            xml = (
                f'<GetAccountAuthorizationDetailsResponse xmlns="{IAM_NS}"><GetAccountAuthorizationDetailsResult>'
                "<UserDetailList/><GroupDetailList/><RoleDetailList/><Policies/><IsTruncated>false</IsTruncated>"
                "</GetAccountAuthorizationDetailsResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
                "</GetAccountAuthorizationDetailsResponse>"
            )
            return _xml(xml)
        return web.Response(status=400, body=b"unknown operation")

    def kms(self, operation: str, params: dict[str, object], account: str, region: str) -> web.Response:
        def arn(kid: str) -> str:
            return f"arn:aws:kms:{region}:{account}:key/{kid}"

        if operation == "ListKeys":
            ids = [key_id(account, region, i) for i in range(self.n)]
            out: dict[str, object] = {"Keys": [{"KeyId": k, "KeyArn": arn(k)} for k in ids], "Truncated": False}
        elif operation in ("ListAliases", "ListResourceTags", "ListGrants"):
            field = {"ListAliases": "Aliases", "ListResourceTags": "Tags", "ListGrants": "Grants"}[operation]
            out = {field: [], "Truncated": False}
        elif operation == "DescribeKey":
            kid = str(params.get("KeyId", "")).rsplit("/", 1)[-1]
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
            kid = str(params.get("KeyId", "")).rsplit("/", 1)[-1]
            out = {"Policy": policy(account, int(kid[:4], 16) % 1000), "PolicyName": "default"}
        else:
            return web.json_response({"__type": "UnsupportedOperationException"}, status=400)
        return web.Response(body=json.dumps(out).encode(), content_type="application/x-amz-json-1.1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys-per-scope", type=int, default=250)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    backend = Backend(args.keys_per_scope)
    app = web.Application(client_max_size=2**24)
    app.router.add_route("*", "/{tail:.*}", backend.handle)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        print(f"http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        return runner

    import asyncio

    loop = asyncio.new_event_loop()
    runner = loop.run_until_complete(start())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.run_until_complete(stop.wait())
    print(json.dumps({"requests": backend.requests}), flush=True)
    loop.run_until_complete(runner.cleanup())


if __name__ == "__main__":
    main()
