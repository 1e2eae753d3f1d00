"""Evaluator benchmark (issues #2, #12): a synthetic estate through the full evaluation.

    python bench/evaluator.py [--keys 10000] [--principals 2000] [--grants 5000] [--seed 7]

Prints keys/s and decisions/s, peak memory (max RSS), and the evaluation's cost per key as a
fraction of what collecting that key costs at AWS's quotas (SPEC §9: `ListGrants`, 100 requests/s
per account and region, is the bound; target < 5 %): evaluation must never be what a scan waits
for. policyuniverse's `is_internet_accessible()` on the same texts runs beside it, for reference
only (it answers one boolean per key, not a decision per principal). Rounds are interleaved
(`--rounds`, caches cleared before each) and the best of each compared: shared machines are noisy.
Not a test: run it by hand; figures go in the issue note.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmsaudit.evaluator import AuditScope, clear_caches, evaluate_keys
from kmsaudit.evaluator.policy import parse_policy
from kmsaudit.model import Grant, IamPrincipal, KeyRecord, PolicyDocument

KEY_ACCOUNTS = [f"1000000000{i:02d}" for i in range(4)]
EXTERNAL = [f"2000000000{i:02d}" for i in range(10)]
REGIONS = ["us-east-1", "eu-west-1"]
USE = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
ADMIN = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
]


def _statement(rng: random.Random, account: str, trusted: list[str], roles: dict[str, list[str]]) -> dict:
    kind = rng.random()
    if kind < 0.35 and trusted:
        ext = rng.choice(trusted)
        who = f"arn:aws:iam::{ext}:root" if rng.random() < 0.6 else rng.choice(roles[ext])
        return {"Sid": "Use", "Effect": "Allow", "Principal": {"AWS": who}, "Action": USE, "Resource": "*"}
    if kind < 0.45 and trusted:
        ext = rng.choice(trusted)
        return {
            "Sid": "Grants",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ext}:root"},
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        }
    if kind < 0.52:
        return {
            "Sid": "ViaS3",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": USE,
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "kms:CallerAccount": account,
                    "kms:ViaService": f"s3.{rng.choice(REGIONS)}.amazonaws.com",
                }
            },
        }
    if kind < 0.56:
        return {
            "Sid": "Perimeter",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {
                "StringNotEquals": {"aws:PrincipalOrgID": "o-bench12345"},
                "Bool": {"aws:PrincipalIsAWSService": "false"},
            },
        }
    if kind < 0.60:
        # CloudWatch Logs encrypting the account's log groups (AWS's documented statement).
        return {
            "Sid": "Logs",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{rng.choice(REGIONS)}.amazonaws.com"},
            "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            "Resource": "*",
            "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:*:{account}:*"}}
            | ({"StringEquals": {"aws:SourceAccount": account}} if rng.random() < 0.9 else {}),
        }
    if kind < 0.603:
        # A role-name pattern meant as confinement: any account can create such a role (public).
        return {
            "Sid": "Backup",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["kms:Decrypt", "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/backup-*"}},
        }
    if kind < 0.605:
        return {
            "Sid": "Public",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringLike": {"kms:ViaService": "secretsmanager.*.amazonaws.com"}},
        }
    return {
        "Sid": f"Admin{rng.randrange(1000)}",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:role/Admin{rng.randrange(50)}"},
        "Action": ADMIN,
        "Resource": "*",
    }


def build_estate(n_keys: int, n_principals: int, n_grants: int, seed: int):
    rng = random.Random(seed)
    roles = {
        ext: [f"arn:aws:iam::{ext}:role/App{i}" for i in range(n_principals // len(EXTERNAL) // 2)] for ext in EXTERNAL
    }
    keys_meta = []
    for _ in range(n_keys):
        account, region = rng.choice(KEY_ACCOUNTS), rng.choice(REGIONS)
        arn = f"arn:aws:kms:{region}:{account}:key/{uuid.UUID(int=rng.getrandbits(128))}"
        trusted = rng.sample(EXTERNAL, rng.randint(0, 3))
        stmts = [
            {
                "Sid": "Enable IAM policies",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ]
        stmts += [_statement(rng, account, trusted, roles) for _ in range(rng.randint(4, 19))]
        keys_meta.append((arn, account, region, json.dumps({"Version": "2012-10-17", "Statement": stmts})))
    principals = []
    for ext in EXTERNAL:
        per_account = n_principals // len(EXTERNAL)
        for i in range(per_account):
            kind = "role" if i < per_account // 2 else "user"
            arn = roles[ext][i] if kind == "role" else f"arn:aws:iam::{ext}:user/user{i}"
            r = rng.random()
            if r < 0.3:
                stmt = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
            elif r < 0.7:
                stmt = {
                    "Effect": "Allow",
                    "Action": rng.sample(USE, 2),
                    "Resource": [rng.choice(keys_meta)[0] for _ in range(rng.randint(1, 5))],
                }
            elif r < 0.88:
                stmt = {"Effect": "Allow", "Action": USE, "Resource": f"arn:aws:kms:*:{rng.choice(KEY_ACCOUNTS)}:key/*"}
            elif r < 0.98:
                stmt = {
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": [rng.choice(keys_meta)[0] for _ in range(rng.randint(1, 5))],
                    "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
                }
            else:
                stmt = {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
            principals.append(
                IamPrincipal(
                    arn=arn,
                    account=ext,
                    kind=kind,
                    name=arn.rsplit("/", 1)[-1],
                    policies=(PolicyDocument("inline:p", {"Statement": [stmt]}),),
                )
            )
    grants: dict[str, list[Grant]] = {}
    for i in range(n_grants):
        arn, account, region, _ = rng.choice(keys_meta)
        if rng.random() < 0.4:
            # What AWS services hold on a real estate (RDS, EBS…): issued by the key's account.
            service = rng.choice(("rds", "ec2", "secretsmanager"))
            grantee, issuer = f"{service}.{region}.amazonaws.com", f"arn:aws:iam::{account}:root"
        else:
            grantee, issuer = rng.choice(roles[rng.choice(EXTERNAL)]), account
        constraints = {"EncryptionContextSubset": {"app": "x"}} if rng.random() < 0.3 else None
        grants.setdefault(arn, []).append(
            Grant(f"g{i}", grantee, ("Decrypt", "GenerateDataKey"), issuing_account=issuer, constraints=constraints)
        )
    keys = [
        KeyRecord(
            arn=arn,
            account=acct,
            region=region,
            key_id=arn.rsplit("/", 1)[1],
            policy=doc,
            grants=tuple(grants.get(arn, ())),
        )
        for arn, acct, region, doc in keys_meta
    ]
    return keys, principals


def _ours(keys: list[KeyRecord], principals: list[IamPrincipal]):
    clear_caches()  # every round starts cold: no statement, policy or pattern parsed yet
    t0 = time.perf_counter()
    scope = AuditScope(principals, audited_accounts=EXTERNAL)
    evaluation = evaluate_keys(keys, scope)
    return time.perf_counter() - t0, evaluation


def _parsing(keys: list[KeyRecord]) -> tuple[float, float]:
    """The floor under kmsaudit's figure: JSON decoding alone, and with statements compiled
    (cold caches, the garbage collector paused as `evaluate_keys` pauses it)."""
    clear_caches()
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for k in keys:
            json.loads(k.policy)
        decoded = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in keys:
            parse_policy(k.policy)
        return decoded, time.perf_counter() - t0
    finally:
        gc.enable()


def _theirs(keys: list[KeyRecord], policy_class) -> tuple[float, int]:
    # Same input as kmsaudit: the policy text as GetKeyPolicy returns it.
    t0 = time.perf_counter()
    public = sum(1 for k in keys if policy_class(json.loads(k.policy)).is_internet_accessible())
    return time.perf_counter() - t0, public


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--principals", type=int, default=2_000)
    ap.add_argument("--grants", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds of both; the best of each is compared (noisy machines)",
    )
    args = ap.parse_args()
    keys, principals = build_estate(args.keys, args.principals, args.grants, args.seed)
    print(
        f"estate: {len(keys)} keys, {len(principals)} IAM principals, {args.grants} grants, "
        f"{sum(len(json.loads(k.policy)['Statement']) for k in keys)} key-policy statements"
    )
    # The collected inventory is long-lived: move it out of the collector's way, as `scan` does.
    gc.collect()
    gc.freeze()
    try:
        from policyuniverse.policy import Policy
    except ImportError:
        Policy = None

    ours: list[float] = []
    theirs: list[float] = []
    evaluation = None
    public = 0
    for i in range(args.rounds):
        evaluation = None  # the previous round's findings go before the next is timed
        gc.collect()
        elapsed, evaluation = _ours(keys, principals)
        ours.append(elapsed)
        line = f"round {i + 1}: kmsaudit {elapsed:6.2f} s"
        if Policy is not None:
            elapsed, public = _theirs(keys, Policy)
            theirs.append(elapsed)
            line += f"   policyuniverse {elapsed:5.2f} s   ratio {ours[-1] / elapsed:5.2f}"
        print(line)
    assert evaluation is not None
    by_access: dict[str, int] = {}
    for f in evaluation.findings:
        by_access[f.access] = by_access.get(f.access, 0) + 1
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = min(ours)
    print(
        f"kmsaudit:       {best:7.2f} s  {len(keys) / best:9.0f} keys/s  "
        f"{evaluation.decisions / best:9.0f} decisions/s  ({evaluation.decisions} decisions, "
        f"{len(evaluation.findings)} findings {by_access}, {len(evaluation.lints)} lints; best of {args.rounds})"
    )
    decoded, parsed = _parsing(keys)
    print(
        f"of which parsing: {parsed:7.2f} s  (json.loads alone {decoded:.2f} s, then every statement compiled "
        "once; no evaluation strategy avoids this part)"
    )
    if theirs:
        print(
            f"policyuniverse: {min(theirs):7.2f} s  {len(keys) / min(theirs):9.0f} keys/s  "
            f"(is_internet_accessible only; {public} keys flagged; best of {args.rounds})"
        )
        print(f"per key, kmsaudit / policyuniverse = {best / min(theirs):.2f} (best against best; for reference)")
    else:
        print("policyuniverse not installed (pip install -e '.[bench]'): no side-by-side figure")
    per_key = best / len(keys)
    scopes: dict[tuple[str, str], int] = {}
    for k in keys:
        scopes[(k.account, k.region)] = scopes.get((k.account, k.region), 0) + 1
    largest = max(scopes.values())
    print(
        f"evaluation per key {per_key * 1e3:.3f} ms; collection per key at the ListGrants quota "
        f"(100 requests/s per scope) {1e3 / 100:.0f} ms: evaluation is {per_key * 100:.1%} of the quota-bound "
        "collection time (target < 5 %)"
    )
    print(
        f"whole estate: {len(scopes)} scopes of up to {largest} keys are collected side by side in "
        f"{largest / 100:.1f} s at best; evaluating all of them on one core takes {best:.2f} s "
        f"({best / (largest / 100):.0%} of that, overlapped with collection as scopes arrive)"
    )
    print(f"peak memory (max RSS of this process, estate included): {rss_mb:.0f} MB (target < 500 MB)")
    print(f"whole estate under 10 s: {'yes' if max(ours) < 10 else 'NO'} (slowest round {max(ours):.2f} s)")


if __name__ == "__main__":
    main()
