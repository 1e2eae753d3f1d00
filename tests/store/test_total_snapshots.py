"""Issue #24's property (SPEC §5, "every snapshot accounts for every configured scope"): for random
sequences of full scans, event re-reads and injected failures (a scope, one key), through the
one place every path writes (Store.save_scan), no finding disappears unless a successful read of
its scope (or of its key) says it is gone, and every snapshot names every configured scope."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmsaudit.model import Finding, ScanResult, ScopeStatus
from kmsaudit.store.database import Store

ACCOUNTS = ("111111111111", "222222222222", "333333333333")
REGION = "us-east-1"
SCOPES = frozenset((a, REGION) for a in ACCOUNTS)
KEYS = {a: tuple(f"arn:aws:kms:{REGION}:{a}:key/k{i}" for i in range(3)) for a in ACCOUNTS}
OUTSIDERS = ("arn:aws:iam::444455556666:root", "arn:aws:iam::777788889999:root")


def finding(key: str, principal: str) -> Finding:
    account = key.split(":")[4]
    return Finding(
        key, account, REGION, principal, principal.split(":")[4], "potential", "external",
        ("key-policy",), ("kms:Decrypt",), False, (), "high",
    )  # fmt: skip


def key_findings(truth: dict[str, frozenset[str]], key: str) -> list[Finding]:
    return [finding(key, p) for p in sorted(truth[key])]


# One step: ("change", key, principals) changes AWS unseen; ("scan", failed scopes, unreadable
# key or None); ("reread", key, fails).
ALL_KEYS = [k for a in ACCOUNTS for k in KEYS[a]]
step = st.one_of(
    st.tuples(st.just("change"), st.sampled_from(ALL_KEYS), st.frozensets(st.sampled_from(OUTSIDERS))),
    st.tuples(
        st.just("scan"),
        st.frozensets(st.sampled_from(sorted(SCOPES))),
        st.one_of(st.none(), st.sampled_from(ALL_KEYS)),
    ),
    st.tuples(st.just("reread"), st.sampled_from(ALL_KEYS), st.booleans()),
)


def full_scan(truth: dict[str, frozenset[str]], failed: frozenset[tuple[str, str]], unreadable: str | None, t: float):
    findings: list[Finding] = []
    scopes = []
    for account in ACCOUNTS:
        if (account, REGION) in failed:
            scopes.append(ScopeStatus(account, REGION, False, 0, "injected", "access-denied"))
            continue
        policies, bad = [], []
        for key in KEYS[account]:
            if key == unreadable:
                bad.append((key, "access-denied"))
                continue
            policies.append((key, f'{{"Statement": [{{"Sid": "{sorted(truth[key])}"}}]}}'))
            findings += key_findings(truth, key)
        scopes.append(
            ScopeStatus(account, REGION, True, len(KEYS[account]), key_policies=tuple(policies), unreadable=tuple(bad))
        )
    return ScanResult(tuple(findings), (), tuple(scopes), started_at=t - 1, finished_at=t, keys=9, expected=SCOPES)


def reread(truth: dict[str, frozenset[str]], key: str, fails: bool, t: float) -> ScanResult:
    account = key.split(":")[4]
    if fails:
        scope = ScopeStatus(account, REGION, False, 0, "injected", "access-denied", partial=(key,))
        return ScanResult((), (), (scope,), started_at=t - 1, finished_at=t, reread=True)
    text = f'{{"Statement": [{{"Sid": "{sorted(truth[key])}"}}]}}'
    scope = ScopeStatus(account, REGION, True, 1, key_policies=((key, text),), partial=(key,))
    return ScanResult(tuple(key_findings(truth, key)), (), (scope,), started_at=t - 1, finished_at=t, reread=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=14))
def test_no_finding_disappears_without_a_successful_read_saying_so(tmp_path: Path, steps: list[tuple]) -> None:
    counter = next(_runs)
    store = Store(tmp_path / f"k{counter}.db")
    truth = {k: frozenset({OUTSIDERS[0]}) for k in ALL_KEYS}
    seen: set[tuple[str, str]] | None = None
    try:
        for n, s in enumerate(steps, start=1):
            t = 1_800_000_000.0 + 60 * n
            if s[0] == "change":
                truth[s[1]] = s[2]
                continue
            if s[0] == "scan":
                _, failed, unreadable = s
                result = full_scan(truth, failed, unreadable, t)
                read_keys = {k for a in ACCOUNTS if (a, REGION) not in failed for k in KEYS[a] if k != unreadable}
            else:
                _, key, fails = s
                if seen is None:
                    continue  # a re-read follows a first full scan (the daemon's order)
                result = reread(truth, key, fails, t)
                read_keys = set() if fails else {key}
            store.save_scan(result, detected_at=t)
            now = {(f["key_arn"], f["principal"]) for f in store.findings()}
            scopes = {(v.account, v.region) for v in store.scope_view()}
            assert scopes == SCOPES, f"step {n} {s[0]}: the snapshot names {sorted(scopes)}"
            if seen is not None:
                for key, principal in seen - now:  # gone: only where this step read the key well...
                    assert key in read_keys, f"step {n} {s}: {principal} on {key} vanished unread"
                    assert principal not in truth[key]  # ...and AWS says it is gone
            # and nothing read well is missing
            assert {(k, p) for k in read_keys for p in truth[k]} <= now
            seen = now
    finally:
        store.close()


_runs = itertools.count()
