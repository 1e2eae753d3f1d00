"""The embedded AWS emulator (moto, server mode, loopback only) and the few calls that seed it.

Used by `kmsaudit demo`; the tests and benchmarks seed their estates with the same helpers.
Needs the `demo` extra (moto); boto3 comes with it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

V = "2012-10-17"


def start_emulator() -> tuple[Any, str]:
    """moto's threaded server on a free loopback port: (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # werkzeug logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def client(service: str, account: str | None = None, region: str = "us-east-1", endpoint_url: str | None = None) -> Any:
    """A boto3 client in `account` (STS AssumeRole into it, as moto separates accounts), or with
    the ambient credentials when `account` is None."""
    import boto3

    if account is None:
        return boto3.client(service, region_name=region, endpoint_url=endpoint_url)
    creds = boto3.client("sts", region_name="us-east-1", endpoint_url=endpoint_url).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/setup", RoleSessionName="seed"
    )["Credentials"]
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def document(*statements: dict[str, Any]) -> str:
    """A policy document's JSON text."""
    return json.dumps({"Version": V, "Statement": list(statements)})


def create_role(iam: Any, name: str, *statements: dict[str, Any], policy_name: str = "inline") -> None:
    """An IAM role (trusting nobody) with `statements`, if any, as one inline policy."""
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=document())
    if statements:
        iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=document(*statements))


def key_policy(account: str, *statements: dict[str, Any]) -> str:
    """AWS's default first statement (the account's IAM decides) followed by `statements`."""
    enable = {
        "Sid": "Enable IAM policies",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    return document(enable, *statements)


def create_key(
    account: str,
    region: str,
    policy: str | None = None,
    *,
    endpoint_url: str | None = None,
    alias: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A key in `account` and `region`, with `alias` (alias/NAME) if given; ECC so that moto does
    not generate an RSA key (slow)."""
    args: dict[str, Any] = {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY", **extra}
    if policy is not None:
        args["Policy"] = policy
    kms = client("kms", account, region, endpoint_url)
    meta: dict[str, Any] = kms.create_key(**args)["KeyMetadata"]
    if alias is not None:
        kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    return meta
