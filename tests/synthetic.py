"""A synthetic scan result (no AWS): `n_keys` keys of one scope, each trusting one outside account,
for the tests of the store, alerts, crashes and exposure."""

from __future__ import annotations

import json
import time

from kmsaudit.model import Finding, ScanResult, ScopeStatus

ACCOUNT = "111122223333"


def scan(n_keys: int, *, extra_principal: str = "", finished_at: float = 0.0, ok: bool = True) -> ScanResult:
    findings = []
    policies = []
    for i in range(n_keys):
        arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{i:08d}"
        policies.append((arn, json.dumps({"Statement": [{"Sid": str(i)}]})))
        for principal in ("arn:aws:iam::444455556666:root", *([extra_principal] if extra_principal else [])):
            findings.append(
                Finding(
                    arn,
                    ACCOUNT,
                    "us-east-1",
                    principal,
                    principal.split(":")[4],
                    "potential",
                    "external",
                    ("key-policy",),
                    ("kms:Decrypt",),
                    False,
                    (),
                    "high",
                )
            )
    scope = ScopeStatus(
        ACCOUNT,
        "us-east-1",
        ok,
        n_keys if ok else 0,
        "" if ok else "boom",
        "" if ok else "x",
        tuple(policies) if ok else (),
    )
    return ScanResult(
        tuple(findings) if ok else (),
        (),
        (scope,),
        started_at=finished_at - 1,
        finished_at=finished_at or time.time(),
        keys=n_keys,
    )
