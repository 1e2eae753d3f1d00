"""A fresh moto per test (the `aws` fixture, autouse where a conftest imports it) and the seeded
estate of the collector tests; shared by tests/aws and tests/faults."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field

import pytest

from kmsaudit.demo.emulator import client, create_key, create_role, document, key_policy

A, B, C, D = "111111111111", "222222222222", "333333333333", "444444444444"
REGIONS = ("us-east-1", "eu-west-1")
USE = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]


@pytest.fixture(autouse=True)
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A wiped moto and credentials that can only reach it."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    return moto_url


@dataclass
class Estate:
    keys: dict[str, str] = field(default_factory=dict)  # name -> ARN
    ids: dict[str, str] = field(default_factory=dict)  # name -> key id

    def add(self, name: str, meta: dict) -> None:
        self.keys[name], self.ids[name] = meta["Arn"], meta["KeyId"]


def role(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


@pytest.fixture
def estate(aws: str) -> Estate:
    """The fixture estate of the collector tests (what each key should yield: test_collect.py)."""
    e = Estate()
    e.add(
        "shared",
        create_key(
            A,
            "us-east-1",
            key_policy(
                A,
                {
                    "Sid": "Allow an external account to use this KMS key",
                    "Effect": "Allow",
                    "Principal": {"AWS": [f"arn:aws:iam::{B}:root"]},
                    "Action": USE,
                    "Resource": "*",
                },
            ),
            Tags=[{"TagKey": "env", "TagValue": "prod"}],
        ),
    )
    client("kms", A).create_alias(AliasName="alias/shared", TargetKeyId=e.ids["shared"])
    e.add("granted", create_key(A, "us-east-1"))  # moto's default key policy
    client("kms", A).create_grant(
        KeyId=e.ids["granted"],
        GranteePrincipal=role(C, "Batch"),
        Operations=["Decrypt", "GenerateDataKey"],
        Constraints={"EncryptionContextSubset": {"app": "batch"}},
    )
    e.add(
        "public",
        create_key(
            A,
            "eu-west-1",
            key_policy(
                A,
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}},
                },
            ),
        ),
    )
    e.add(
        "narrowed",
        create_key(
            A,
            "eu-west-1",
            key_policy(
                A,
                {"Effect": "Allow", "Principal": {"AWS": role(B, "Reader")}, "Action": "kms:Decrypt", "Resource": "*"},
            ),
        ),
    )
    e.add(
        "partner",
        create_key(
            B,
            "us-east-1",
            key_policy(
                B,
                {"Effect": "Allow", "Principal": {"AWS": role(A, "Auditor")}, "Action": "kms:Decrypt", "Resource": "*"},
            ),
        ),
    )
    e.add(
        "confined",
        create_key(
            C,
            "eu-west-1",
            key_policy(
                C,
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:CallerAccount": B}},
                },
            ),
        ),
    )
    create_key(
        D,
        "us-east-1",
        key_policy(
            D,
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            },
        ),
    )

    iam_b = client("iam", B)
    create_role(
        iam_b,
        "Reader",
        {
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:Encrypt"],
            "Resource": [e.keys["shared"], e.keys["narrowed"]],
        },
        policy_name="use-keys",
    )
    create_role(iam_b, "NoPerm", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}, policy_name="s3")
    create_role(iam_b, "Bounded")
    managed = iam_b.create_policy(
        PolicyName="KmsAll", PolicyDocument=document({"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"})
    )["Policy"]["Arn"]
    iam_b.create_policy_version(
        PolicyArn=managed,
        SetAsDefault=True,
        PolicyDocument=document({"Effect": "Allow", "Action": "kms:*", "Resource": f"arn:aws:kms:*:{A}:key/*"}),
    )
    boundary = iam_b.create_policy(
        PolicyName="OnlyDecrypt",
        PolicyDocument=document({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}),
    )["Policy"]["Arn"]
    iam_b.attach_role_policy(RoleName="Bounded", PolicyArn=managed)
    iam_b.put_role_permissions_boundary(RoleName="Bounded", PermissionsBoundary=boundary)
    iam_b.create_group(GroupName="Crypto")
    iam_b.put_group_policy(
        GroupName="Crypto",
        PolicyName="encrypt",
        PolicyDocument=document({"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}),
    )
    iam_b.create_user(UserName="Alice")
    iam_b.add_user_to_group(GroupName="Crypto", UserName="Alice")

    create_role(client("iam", A), "Auditor", {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}, policy_name="all")
    create_role(client("iam", C), "Batch")
    return e


def config_text(accounts: tuple[str, ...] = (A, B, C), *, extra: str = "", store: str = "") -> str:
    lines = ["[scan]", f"regions = {json.dumps(list(REGIONS))}", 'interval = "15m"', extra, ""]
    if store:
        lines += ["[store]", f"path = {json.dumps(store)}", ""]
    for account in accounts:
        lines += ["[[accounts]]", f'id = "{account}"', f'role_arn = "arn:aws:iam::{account}:role/KmsAuditReadOnly"', ""]
    return "\n".join(lines)
