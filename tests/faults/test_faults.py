"""AWS misbehaving between kmsaudit and moto (issue #7, point 1).

Where retries can absorb the faults, the scan's findings are identical to a clean run's; where
they cannot, exactly the scope that could not be read is marked failed — never silently partial,
never drift (SPEC §5: a failed scope carries its last good state over).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from estate import REGIONS, A, B, C, Estate, config_text
from faultproxy import KINDS, FaultProxy, Plan, Rule

from kmsaudit.config.settings import Config, load_config
from kmsaudit.model import ScanResult
from kmsaudit.run.scan import run_scan
from kmsaudit.store.database import Store

# Each attempt waits at most 2 s for an answer (a loaded CI machine's moto answers well within
# that); the proxy's slow answers take 2.6 s.
TIMEOUTS = "read_timeout = 2\nconnect_timeout = 2"


def _config(tmp_path: Path, extra: str = "") -> Config:
    path = tmp_path / "kmsaudit.toml"
    path.write_text(config_text(extra=f"{TIMEOUTS}\n{extra}"))
    return load_config(path)


def _contract(result: ScanResult) -> list[str]:
    """Every finding and lint as its contract JSON (SPEC §4), sorted: equal lists, equal answers."""
    findings = [json.dumps(f.to_dict(), sort_keys=True) for f in result.findings]
    lints = [json.dumps(lint.to_dict(), sort_keys=True) for lint in result.lints]
    return sorted(findings) + sorted(lints)


def _scope_of(result: ScanResult, account: str, region: str) -> list[str]:
    return sorted(
        json.dumps(f.to_dict(), sort_keys=True)
        for f in result.findings
        if f.key_arn.split(":")[4] == account and f.key_arn.split(":")[3] == region
    )


async def _scan_via(proxy: FaultProxy, config: Config, monkeypatch: pytest.MonkeyPatch) -> ScanResult:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        return await run_scan(config)
    finally:
        proxy.stop()


async def test_transient_faults_are_absorbed_and_the_findings_equal_a_clean_run(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch, report: Any
) -> None:
    config = _config(tmp_path, "max_attempts = 6")
    clean = await run_scan(config)
    assert clean.findings and not clean.failed_scopes

    # 30 % throttling, plus 500s, 503s, resets, answers cut off halfway and answers slower than
    # the client's timeout.
    # No request is faulted more than twice running, and 6 attempts are allowed: retries
    # must absorb every fault. Pages of 2 put pagination under fire as well.
    plan = Plan(
        rates={"throttle": 0.30, "500": 0.05, "503": 0.05, "reset": 0.05, "slow": 0.05, "truncated": 0.05},
        max_consecutive=2,
    )
    proxy = FaultProxy(aws, plan, page_size=2)
    faulty = await _scan_via(proxy, config, monkeypatch)

    assert all(proxy.injected[kind] > 0 for kind in KINDS), proxy.injected
    assert not faulty.failed_scopes and not faulty.iam_failures
    assert _contract(faulty) == _contract(clean)
    assert faulty.throttled >= proxy.injected["throttle"]  # every throttling answer was counted

    store = Store(tmp_path / "k.db")
    store.save_scan(clean)
    _, events = store.save_scan(faulty)
    assert events == []  # faults that were absorbed are not drift
    report.add(
        faults_injected=sum(proxy.injected.values()),
        transient_faults_injected=sum(proxy.injected.values()),
        transient_faults_survived=sum(proxy.injected.values()),
        **{f"injected_{kind}": n for kind, n in proxy.injected.items()},
        fault_requests=proxy.requests,
        findings_compared=len(clean.findings),
        findings_lost=len(set(_contract(clean)) - set(_contract(faulty))),
    )


def _kms(operation: str, account: str, region: str, *, paged: bool = False) -> Any:
    def match(service: str, op: str, acct: str, reg: str, params: dict[str, Any]) -> bool:
        return (
            service == "kms"
            and op == operation
            and acct == account
            and reg == region
            and (not paged or "Marker" in params)
        )

    return match


# One persistent fault per case; (account, region) is the scope it must fail, or (account, "global")
# for the account's IAM, whose failure must carry its principals' access over, or (account,
# "keys:REGION") for a per-key read: those keys are unreadable, their scope is not failed (SPEC §5).
PERSISTENT = [
    pytest.param("throttle", _kms("GetKeyPolicy", A, "us-east-1"), (A, "keys:us-east-1"), id="throttled-GetKeyPolicy"),
    pytest.param("503", _kms("ListKeys", A, "eu-west-1", paged=True), (A, "eu-west-1"), id="503-on-page-2-ListKeys"),
    pytest.param("500", _kms("ListGrants", A, "us-east-1"), (A, "keys:us-east-1"), id="500-ListGrants"),
    pytest.param("reset", _kms("ListAliases", B, "us-east-1"), (B, "us-east-1"), id="reset-ListAliases"),
    pytest.param("slow", _kms("DescribeKey", C, "eu-west-1"), (C, "keys:eu-west-1"), id="slow-DescribeKey"),
    pytest.param(
        "truncated", _kms("ListResourceTags", B, "us-east-1"), (B, "keys:us-east-1"), id="truncated-ListResourceTags"
    ),
    pytest.param(
        "503",
        lambda service, op, acct, reg, params: op == "GetAccountAuthorizationDetails" and acct == A,
        (A, "global"),
        id="503-IAM-of-A",
    ),
    pytest.param(
        "reset",
        lambda service, op, acct, reg, params: op == "AssumeRole" and f"::{C}:" in params.get("RoleArn", ""),
        (C, "*"),
        id="reset-AssumeRole-C",
    ),
]


@pytest.mark.parametrize(("kind", "match", "target"), PERSISTENT)
async def test_a_fault_retries_cannot_absorb_fails_its_scope_and_nothing_else(
    kind: str,
    match: Any,
    target: tuple[str, str],
    tmp_path: Path,
    estate: Estate,
    aws: str,
    monkeypatch: pytest.MonkeyPatch,
    report: Any,
) -> None:
    config = _config(tmp_path, "max_attempts = 2")
    store = Store(tmp_path / "k.db")
    clean = await run_scan(config)
    store.save_scan(clean)
    before = sorted(f["id"] for f in store.findings())

    rule = Rule(kind, match)
    proxy = FaultProxy(aws, Plan(persistent=[rule]), page_size=1)
    faulty = await _scan_via(proxy, config, monkeypatch)
    assert rule.hits >= 2  # the first attempt and the retry

    account, region = target
    failed = {(s.account, s.region) for s in faulty.failed_scopes}
    if region.startswith("keys:"):
        # Per-key reads: the scope is read, its keys are recorded unreadable and evaluated from
        # nothing half-read; their last good state carries over (SPEC §5).
        region = region.removeprefix("keys:")
        assert not failed and not faulty.iam_failures
        (scope,) = [s for s in faulty.scopes if (s.account, s.region) == (account, region)]
        assert scope.unreadable and len(scope.unreadable) == scope.keys
        assert {json.loads(f)["kind"] for f in _scope_of(faulty, account, region)} == {"unparseable"}
        _, events = store.save_scan(faulty)
        assert {e.kind for e in events} == {"key-unreadable"} and len(events) == scope.keys
        assert set(before) <= {f["id"] for f in store.findings()}  # carried, with the unreadable markers
        report.add(persistent_faults=1, persistent_faults_reported_failed=1, faults_injected=rule.hits)
        return
    if region == "global":
        assert not failed and set(faulty.iam_failures) == {account}
    elif region == "*":
        assert failed == {(account, r) for r in REGIONS} and set(faulty.iam_failures) == {account}
    else:
        assert failed == {target} and not faulty.iam_failures
        # never silently partial: the failed scope contributes no findings at all
        assert _scope_of(faulty, account, region) == []
    for other in {(s.account, s.region) for s in faulty.scopes} - failed:
        if region in ("global", "*"):
            continue  # the account's principals carry over in the store, checked below
        assert _scope_of(faulty, *other) == _scope_of(clean, *other), other

    _, events = store.save_scan(faulty)
    assert {e.kind for e in events} == {"scope-failed"}  # said loudly, and no added/removed
    assert sorted(f["id"] for f in store.findings()) == before  # the last good state carries over
    report.add(
        persistent_faults=1,
        persistent_faults_reported_failed=1,
        faults_injected=rule.hits,
        **{f"injected_{kind}": rule.hits},
        fault_requests=proxy.requests,
        findings_compared=len(before),
        findings_lost=len(set(before) - {f["id"] for f in store.findings()}),
    )
