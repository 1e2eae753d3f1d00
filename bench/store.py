"""Store benchmark (issues #4, #14): write a 10,000-key / 50,000-finding snapshot, drift between
two such snapshots, the growth of 100 scans of an unchanged estate, and bench/evaluator.py's
estate scanned again and again through a source that reorders every key policy as real KMS
does (aws-cli#9456): drift events, new state rows and database growth (expected 0, 0, ~0), and
what the canonical form costs beside the evaluation; what 10,000 acceptance entries add to a
scan of 50,000 findings (issue #15). Not a test.

    python bench/store.py [--keys 10000] [--findings-per-key 5] [--scans 100] [--reordered-scans 20]
                          [--accept-entries 10000] [--only accept]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from awsproxy import kms_order  # tests/awsproxy.py: what GetKeyPolicy does to a policy

from kmsaudit.drift import ScopeState, diff_scope
from kmsaudit.model import Finding, ScanResult, ScopeStatus
from kmsaudit.store.database import Store

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
    ap.add_argument("--reordered-scans", type=int, default=20)
    ap.add_argument("--retention-scans", type=int, default=1000)
    ap.add_argument("--retention-scopes", type=int, default=100)
    ap.add_argument("--accept-entries", type=int, default=10_000)
    ap.add_argument("--only", choices=["accept"], help="run one section only")
    args = ap.parse_args()
    if args.only == "accept":
        accepting(args.keys, args.findings_per_key, args.accept_entries)
        accepting(args.keys, args.findings_per_key, args.accept_entries, dense=True)
        return
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
    store.close()
    reordered_scans(args.keys, args.reordered_scans)
    retention(args.retention_scans, args.retention_scopes, 1.0)
    accepting(args.keys, args.findings_per_key, args.accept_entries)
    accepting(args.keys, args.findings_per_key, args.accept_entries, dense=True)


def reordered_scans(n_keys: int, scans: int) -> None:
    import dataclasses
    import gc

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from evaluator import EXTERNAL, build_estate  # bench/evaluator.py

    from kmsaudit.evaluator import AuditScope, clear_caches, evaluate_keys
    from kmsaudit.evaluator.canonical import canonical_statement, document_text

    keys, principals = build_estate(n_keys, 2000, 5000, 7)
    path = Path(tempfile.mkdtemp()) / "reordered.db"
    store = Store(path)
    events_total = 0
    evaluation_times: list[float] = []
    canonical_times: list[float] = []
    rows = start = 0
    for n in range(scans + 1):
        reorder = kms_order(n)
        texts = [reorder(k.policy) for k in keys]
        batch = [dataclasses.replace(k, policy=t) for k, t in zip(keys, texts, strict=True)]
        clear_caches()
        gc.collect()
        t0 = time.perf_counter()
        evaluation = evaluate_keys(batch, AuditScope(principals, audited_accounts=EXTERNAL))
        evaluation_times.append(time.perf_counter() - t0)
        # The canonical form's own work in that evaluation (the parse decodes JSON anyway):
        # every statement's canonical text, then the policy's.
        decoded = [json.loads(t) for t in texts]
        t0 = time.perf_counter()
        for doc in decoded:
            document_text(doc, sorted(canonical_statement(s)[1] for s in doc["Statement"]))
        canonical_times.append(time.perf_counter() - t0)
        by_scope: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
        for key, (arn, text) in zip(batch, evaluation.policies, strict=True):
            by_scope.setdefault((key.account, key.region), []).append((arn, text))
        scopes = tuple(
            ScopeStatus(account, region, True, len(policies), key_policies=tuple(policies))
            for (account, region), policies in sorted(by_scope.items())
        )
        now = time.time()
        result = ScanResult(evaluation.findings, (), scopes, started_at=now - 1, finished_at=now, keys=len(batch))
        _, events = store.save_scan(result)
        if n == 0:  # the baseline; what follows must add nothing
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            start = size(path)
            rows = store.db.execute("SELECT count(*) FROM states").fetchone()[0]
            continue
        events_total += len(events)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    new_rows = store.db.execute("SELECT count(*) FROM states").fetchone()[0] - rows
    evaluation, canonical = min(evaluation_times), min(canonical_times)
    print(
        f"{scans} scans of {len(keys)} keys, every policy reordered as KMS returns it: {events_total} drift events, "
        f"{new_rows} new state rows, database grew by {(size(path) - start) / 1e3:.1f} kB (expected 0, 0, ~0)"
    )
    print(
        f"canonical form: {canonical:.2f} s of its own work per scan against {evaluation:.2f} s of evaluation "
        f"({canonical / evaluation:.1%}; target < 5 %; best of {scans + 1})"
    )
    # What it adds to a scan: the same reordered estate evaluated with statements keyed by their
    # raw text (the parser before the canonical form: every reshuffled statement compiled anew),
    # interleaved with the canonical parser, best of three each.
    from kmsaudit.evaluator import policy as parser

    def timed(raw_keys: bool) -> float:
        saved = (parser.canonical_statement, parser.document_text)
        if raw_keys:
            parser.canonical_statement = lambda raw: (raw, repr(raw))  # type: ignore[assignment]
            parser.document_text = lambda doc, texts: ""  # type: ignore[assignment]
        try:
            batch = [dataclasses.replace(k, policy=kms_order(99)(k.policy)) for k in keys]
            clear_caches()
            gc.collect()
            t0 = time.perf_counter()
            evaluate_keys(batch, AuditScope(principals, audited_accounts=EXTERNAL))
            return time.perf_counter() - t0
        finally:
            parser.canonical_statement, parser.document_text = saved

    with_canonical, raw = [], []
    for _ in range(3):
        raw.append(timed(True))
        with_canonical.append(timed(False))
    added = min(with_canonical) - min(raw)
    print(
        f"evaluation of the reordered estate: {min(with_canonical):.2f} s with the canonical form, {min(raw):.2f} s "
        f"keying statements by their raw text: canonicalisation adds {added:+.2f} s to a scan "
        f"({added / min(raw):+.1%} of the evaluation; target < 5 %)"
    )


def retention(scans: int, scopes: int, keep_days: float) -> None:
    """Issue #19: a daemon's database over `scans` scans of `scopes` scopes every 15 minutes with
    retention active: its size against the live data (what `VACUUM INTO` leaves), and the longest
    stall of the event loop while pruning, pruned as the pipeline does (a worker thread)."""
    import asyncio
    import shutil

    path = Path(tempfile.mkdtemp()) / "retention.db"
    store = Store(path)
    start = 1_800_000_000.0
    stalls: list[float] = []
    peak = 0
    for n in range(scans):
        now = start + n * 900
        findings, statuses = [], []
        for j in range(scopes):
            account, region = f"3000000{j:05d}", "us-east-1"
            policies = []
            for i in range(10):
                arn = f"arn:aws:kms:{region}:{account}:key/{i:08d}"
                policies.append((arn, json.dumps({"Statement": [{"Sid": str(i), "Effect": "Allow"}]})))
                principal = f"arn:aws:iam::20000000{(n // 50 + i) % 10:04d}:root"  # changes every 50 scans
                findings.append(
                    Finding(
                        arn,
                        account,
                        region,
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
            statuses.append(ScopeStatus(account, region, True, 10, key_policies=tuple(policies)))
        store.save_scan(
            ScanResult(tuple(findings), (), tuple(statuses), started_at=now - 5, finished_at=now), detected_at=now
        )

        async def pruned_while_ticking(now: float = now) -> float:
            worst, last, done = 0.0, time.perf_counter(), False

            async def tick() -> None:
                nonlocal worst, last
                while not done:
                    await asyncio.sleep(0.005)
                    t = time.perf_counter()
                    worst, last = max(worst, t - last - 0.005), t

            ticker = asyncio.create_task(tick())
            await asyncio.to_thread(_prune_at, path, keep_days, now)
            done = True
            await ticker
            return worst

        stalls.append(asyncio.run(pruned_while_ticking()))
        peak = max(peak, size(path))
    total = size(path)
    live = Path(tempfile.mkdtemp()) / "live.db"
    store.db.execute(f"VACUUM INTO '{live}'")
    store.close()
    kept = Store(live, create=False, read_only=True)
    snapshots = kept.db.execute("SELECT count(*) FROM snapshots").fetchone()[0]
    kept.close()
    print(
        f"{scans} scans × {scopes} scopes, retention {keep_days:g} days: database + WAL {total / 1e6:.2f} MB "
        f"(peak {peak / 1e6:.2f} MB) against {size(live) / 1e6:.2f} MB of live data ({snapshots} snapshots kept): "
        f"{total / size(live):.2f}× (target ≤ 2×); longest event-loop stall while pruning "
        f"{max(stalls) * 1e3:.1f} ms (target < 100 ms)"
    )
    shutil.rmtree(path.parent, ignore_errors=True)


def accepting(n_keys: int, per_key: int, n_entries: int, dense: bool = False) -> None:
    """Issue #15: judging a scan's findings against the acceptance entries, and storing which entry
    accepted what, measured beside the same scan without entries. Entries as a real estate has
    them: most narrow (one key, one role, as `kmsaudit accept` writes them), some for a role or a
    whole partner account over every key of an account (globs), some by tag, a few for any
    principal of a key; they name a thousand partner accounts, of which the estate's findings
    concern ten. `dense`: the worst case instead — every entry names the same partner account,
    each with its own glob over the key ids of the same key account."""
    from datetime import date, timedelta

    from kmsaudit.acceptance.matcher import _LAST, Acceptance, KeyFacts

    _LAST.clear()
    from kmsaudit.config.accept import AcceptSettings
    from kmsaudit.gcpause import gc_paused

    result = estate(n_keys, per_key)
    today = date(2026, 11, 27)
    entries = []
    combos: set[tuple[int, str, str, str]] = set()
    findings = result.findings
    for i in range(n_entries):
        f = findings[(i * 7919) % len(findings)]  # spread over the estate, deterministic
        # The partner an entry names: one of the estate's for one in five entries, one of a thousand
        # accounts this scan does not see for the rest (narrow entries name the finding's role).
        partner = f.principal_account if i % 50 < 10 else f"3{i % 1000:011d}"
        kind = i % 10
        if kind in (7, 8) and (kind, partner, f.key_account, f.region) in combos:
            partner = f"3{i % 1000:011d}"  # entries are distinct: one per partner and scope
        combos.add((kind, partner, f.key_account, f.region))
        base = {"id": f"e{i}", "reason": "bench", "owner": "bench", "expires": today + timedelta(days=90)}
        if dense:
            entry = {
                **base,
                "keys": [f"arn:aws:kms:*:{ACCOUNTS[0]}:key/{i:05d}*"],
                "principals": ["200000000000"],
                "actions": ["kms:Decrypt"],
            }
        elif kind < 7:  # narrow: this key, this role, these actions
            entry = {**base, "keys": [f.key_arn], "principals": [f.principal], "actions": list(f.actions)}
        elif kind == 7:  # one role, over every key of a region and account (a glob)
            entry = {
                **base,
                "keys": [f"arn:aws:kms:{f.region}:{f.key_account}:key/*"],
                "principals": [f"arn:aws:iam::{partner}:role/App0"],
                "actions": ["kms:Decrypt"],
            }
        elif kind == 8:  # a whole partner account, over every key of an account (a glob)
            entry = {
                **base,
                "keys": [f"arn:aws:kms:*:{f.key_account}:key/*"],
                "principals": [partner],
                "actions": ["kms:Decrypt"],
            }
        else:  # by tag, for any role of one account, or any principal of a key
            entry = {
                **base,
                "keys": [f"tag:team=t{i % 50}"],
                "principals": [f"arn:aws:iam::{partner}:role/*"],
                "actions": ["kms:Decrypt", "kms:Encrypt"],
            }
            if i % 20 == 9:
                entry = {
                    **base,
                    "keys": [f.key_arn],
                    "principals": ["arn:aws:iam::*:role/App*"],
                    "actions": ["kms:Decrypt"],
                }
        entries.append(AcceptSettings.model_validate(entry))
    facts = {
        f.key_arn: KeyFacts(aliases=(f"alias/k{zlib.crc32(f.key_arn.encode()) % 1000}",), tags={"team": f"t{i % 50}"})
        for i, f in enumerate(findings)
    }

    def judging() -> tuple[float, Acceptance, tuple[Finding, ...]]:
        t0 = time.perf_counter()
        acceptance = Acceptance.for_scan(entries, today)  # built on the first scan, reused after
        with gc_paused():  # as kmsaudit/run/scan.py judges, beside the evaluation
            judged = tuple(acceptance.judge(f, facts[f.key_arn]) for f in findings)
        return time.perf_counter() - t0, acceptance, judged

    first, acceptance, judged = judging()
    later = min(judging()[0] for _ in range(3))
    accepted = sum(f.accepted for f in judged)
    outgrown = sum(f.outgrew is not None for f in judged)

    import dataclasses

    with_entries = dataclasses.replace(
        result,
        findings=judged,
        accept_configured=frozenset(e.id for e in entries),
        accept_matched=frozenset(acceptance.matched),
    )
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(3):  # side by side, alternating: the machine is noisy
        for marked in (False, True):
            path = Path(tempfile.mkdtemp()) / "accept.db"
            store = Store(path)
            store.save_scan(estate(n_keys, per_key, variant=1))  # a previous state to compare with
            t0 = time.perf_counter()
            store.save_scan(with_entries if marked else result)
            times[marked].append(time.perf_counter() - t0)
            store.close()
    storing = min(times[True]) - min(times[False])
    print(
        f"{n_entries:,} acceptance entries{' (dense worst case)' if dense else ''} against {len(findings):,} "
        f"findings ({accepted:,} accepted by {len(acceptance.matched):,} entries, {outgrown:,} outgrew one): "
        f"judged in {first:.2f} s on the first scan (index built), {later:.2f} s on later ones; storing "
        f"{min(times[True]):.2f} s against {min(times[False]):.2f} s without entries (best of 3, alternating); "
        f"added to a scan: {later + max(storing, 0):.2f} s ({first + max(storing, 0):.2f} s the first after "
        f"a (re)load; a storing difference below 0 is noise and counts as 0; target < 0.5 s)"
    )


def _prune_at(path: Path, keep_days: float, now: float) -> None:
    """What the pipeline's `scan.prune` does, at a given time: its own connection, in a thread."""
    store = Store(path, create=False)
    try:
        store.prune(keep_days, now=now)
    finally:
        store.close()


if __name__ == "__main__":
    main()
