"""A small estate as a scan result, shared by the 0.1.0 fixture builder (make_v010_db.py) and the
upgrade test: key policies written in one order, findings as the evaluator reported them."""

from __future__ import annotations

import json
from typing import Any

from kmsaudit.evaluator import AuditScope, evaluate_keys
from kmsaudit.model import KeyRecord, ScanResult, ScopeStatus

A = "111122223333"
REGION = "us-east-1"


def policy(i: int, version: int) -> dict[str, Any]:
    statements = [
        {
            "Sid": "Enable IAM policies",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "Partners",
            "Effect": "Allow",
            "Principal": {"AWS": ["arn:aws:iam::444455556666:root", "arn:aws:iam::777788889999:root"]},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:ViaService": [f"s3.{REGION}.amazonaws.com", f"rds.{REGION}.amazonaws.com"]}
            },
        },
    ]
    if i == 0 and version == 2:
        statements.append(
            {
                "Sid": "New",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::555566667777:root"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            }
        )
    return {"Version": "2012-10-17", "Id": f"key-policy-{i}", "Statement": statements}


def keys(version: int, text: Any = json.dumps) -> list[KeyRecord]:
    return [
        KeyRecord(
            arn=f"arn:aws:kms:{REGION}:{A}:key/0000000{i}-0000-0000-0000-000000000000",
            account=A,
            region=REGION,
            key_id=f"0000000{i}-0000-0000-0000-000000000000",
            policy=text(policy(i, version)),
        )
        for i in range(3)
    ]


def result(version: int, text: Any = json.dumps) -> ScanResult:
    records = keys(version, text)
    evaluation = evaluate_keys(records, AuditScope(audited_accounts=[A]))
    stored = getattr(evaluation, "policies", None) or tuple((k.arn, k.policy) for k in records)
    return ScanResult(
        findings=evaluation.findings,
        lints=(),
        scopes=(ScopeStatus(A, REGION, True, len(records), key_policies=stored),),
        started_at=1790000000.0 + version,
        finished_at=1790000010.0 + version,
        keys=len(records),
    )
