"""Store benchmark (issue #4): write a 10,000-key / 50,000-finding snapshot, drift between two
such snapshots, and the growth of 100 scans of an unchanged estate. Not a test.

    python bench/store.py [--keys 10000] [--findings-per-key 5] [--scans 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmsaudit.drift import ScopeState, diff_scope
from kmsaudit.model import Finding, ScanResult, ScopeStatus
from kmsaudit.store import Store

ACCOUNTS = [f"1000000000{i:02d}" for i in range(4)]
REGIONS = ["us-east-1", "eu-west-1"]


def estate(n_keys: int, per_key: int, variant: int = 0) -> ScanResult:
    findings, scopes = [], []
    per_scope = n_keys // (len(ACCOUNTS) * len(REGIONS))
    for account in ACCOUNTS:
        for region in REGIONS:
            policies = []
            for i in range(per_scope):
                arn = f"arn:aws:kms:{region}:{account}:key/{i:08d}-0000-0000-0000-000000000000"
                policies.append(
                    (
                        arn,
                        json.dumps(
                            {
                                "Version": "2012-10-17",
                                "Statement": [
                                    {
                                        "Sid": "Enable",
                                        "Effect": "Allow",
                                        "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                                        "Action": "kms:*",
                                        "Resource": "*",
                                    },
                                    {
                                        "Sid": f"Use{i}",
                                        "Effect": "Allow",
                                        "Principal": {"AWS": f"arn:aws:iam::2000000000{i % 10:02d}:root"},
                                        "Action": ["kms:Decrypt", "kms:Encrypt"],
                                        "Resource": "*",
                                    },
                                ],
                            }
                        ),
                    )
                )
                for j in range(per_key):
                    ext = f"2000000000{(i + j) % 10:02d}"
                    actions = ("kms:Decrypt", "kms:Encrypt") + (("kms:Sign",) if variant and i % 100 == j else ())
                    findings.append(
                        Finding(
                            arn,
                            account,
                            region,
                            f"arn:aws:iam::{ext}:role/App{j}",
                            ext,
                            "effective",
                            "external",
                            ("iam-policy", "key-policy"),
                            actions,
                            False,
                            (),
                            "high",
                        )
                    )
            scopes.append(ScopeStatus(account, region, True, per_scope, key_policies=tuple(policies)))
    now = time.time()
    return ScanResult(tuple(findings), (), tuple(scopes), started_at=now - 1, finished_at=now, keys=n_keys)


def size(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--findings-per-key", type=int, default=5)
    ap.add_argument("--scans", type=int, default=100)
    args = ap.parse_args()
    base = estate(args.keys, args.findings_per_key)
    changed = estate(args.keys, args.findings_per_key, variant=1)
    path = Path(tempfile.mkdtemp()) / "bench.db"
    store = Store(path)

    t0 = time.perf_counter()
    store.save_scan(base)
    write = time.perf_counter() - t0
    print(f"snapshot of {base.keys} keys, {len(base.findings)} findings written in {write:.2f} s (target < 5 s)")

    t0 = time.perf_counter()
    _, events = store.save_scan(changed)
    both = time.perf_counter() - t0
    before = {}
    after = {}
    for f in base.findings:
        before.setdefault((f.key_account, f.region), []).append(f.to_dict())
    for f in changed.findings:
        after.setdefault((f.key_account, f.region), []).append(f.to_dict())
    t0 = time.perf_counter()
    pure = []
    for scope in changed.scopes:
        key = (scope.account, scope.region)
        pure += diff_scope(
            scope.account,
            scope.region,
            ScopeState.build(before[key], scope.key_policies),
            ScopeState.build(after[key], scope.key_policies),
        )
    drift_time = time.perf_counter() - t0
    print(
        f"drift between two such snapshots: {drift_time:.2f} s pure ({len(pure)} events; target < 1 s); "
        f"second snapshot written with its drift in {both:.2f} s ({len(events)} events)"
    )

    store.save_scan(base)  # back to the base state
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    start = size(path)
    t0 = time.perf_counter()
    for _ in range(args.scans):
        store.save_scan(base)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    grown = size(path) - start
    print(
        f"{args.scans} scans of the unchanged estate: database grew by {grown / 1e6:.2f} MB "
        f"(target < 20 MB), {(time.perf_counter() - t0) / args.scans:.2f} s a scan; total {size(path) / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
