"""Issue #16: findings to AWS Security Hub (ASFF, BatchImportFindings) through the durable outbox,
round trip on moto's server: the findings arrive with their severities; an unchanged scan sends
nothing; a finding that is gone comes back ARCHIVED; an outage loses nothing and sends nothing
twice; an unchanged finding is sent again after a day (Security Hub's 90-day retention)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import boto3
import pytest
from awsproxy import AwsProxy
from estate import A, Estate, client, config_text, key_policy

from kmsaudit.config.settings import load_config
from kmsaudit.run.scan import scan_and_record
from kmsaudit.store.database import Store

EXPORT = '\n[[export]]\ntype = "securityhub"\nregion = "us-east-1"\n'
SEVERITY = {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW"}


def _scan(config: Path) -> Any:
    return asyncio.run(scan_and_record(load_config(config)))


def _sent(proxy: AwsProxy) -> list[dict[str, Any]]:
    """Every finding BatchImportFindings was given, in order."""
    return [f for op, params in proxy.params if op == "BatchImportFindings" for f in params["Findings"]]


def _in_security_hub(proxy: AwsProxy) -> dict[str, dict[str, Any]]:
    hub = boto3.client("securityhub", region_name="us-east-1", endpoint_url=proxy.url)
    found: dict[str, dict[str, Any]] = {}
    for page in hub.get_paginator("get_findings").paginate():
        found.update({f["Id"]: f for f in page["Findings"]})
    return found


def test_round_trip_lifecycle_and_no_resend(tmp_path: Path, estate: Estate, proxy: AwsProxy) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")) + EXPORT)
    first = _scan(config)
    findings = {f.id: f for f in first.result.findings}
    assert findings and first.pending_alerts == 0
    hub = _in_security_hub(proxy)
    assert set(hub) == set(findings)
    for finding_id, asff in hub.items():
        f = findings[finding_id]
        assert asff["Severity"]["Label"] == SEVERITY[f.severity]
        assert asff["Resources"][0] == {"Type": "AwsKmsKey", "Id": f.key_arn, "Partition": "aws", "Region": f.region}
        assert asff["RecordState"] == "ACTIVE" and asff["Compliance"]["Status"] == "FAILED"
        assert asff["AwsAccountId"] == "123456789012"  # the sending account's own Security Hub
        assert asff["ProductArn"] == "arn:aws:securityhub:us-east-1:123456789012:product/123456789012/default"
        assert asff["ProductFields"]["kmsaudit/KeyAccount"] == f.key_account
    calls = [op for _, op in proxy.operations if op == "BatchImportFindings"]
    assert len(calls) == -(-len(findings) // 100)  # batches of 100

    sent = len(_sent(proxy))
    _scan(config)  # nothing changed: nothing is sent again
    assert len(_sent(proxy)) == sent

    # The partner statement goes away: its findings are sent once more, ARCHIVED; nothing else.
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["narrowed"], PolicyName="default", Policy=key_policy(A)
    )
    third = _scan(config)
    gone = set(findings) - {f.id for f in third.result.findings}
    assert gone
    resent = _sent(proxy)[sent:]
    assert {f["Id"] for f in resent if f["RecordState"] == "ARCHIVED"} == gone
    assert all(f["RecordState"] == "ARCHIVED" for f in resent)
    hub = _in_security_hub(proxy)
    assert {i for i, f in hub.items() if f["RecordState"] == "ARCHIVED"} == gone


def test_an_outage_loses_nothing_and_sends_nothing_twice(tmp_path: Path, estate: Estate, proxy: AwsProxy) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")) + EXPORT)
    proxy.deny_operations = {"BatchImportFindings"}
    down = _scan(config)
    assert down.pending_alerts == len(down.result.findings) > 0  # waiting in the outbox
    assert _in_security_hub(proxy) == {}
    refused = len(_sent(proxy))  # the proxy saw the refused attempt
    proxy.deny_operations = set()
    store = Store(tmp_path / "k.db")
    store.db.execute("UPDATE outbox SET next_attempt_at = 0")  # their backoff is over
    store.db.conn.commit()
    store.close()
    up = _scan(config)
    assert up.pending_alerts == 0
    ids = [f["Id"] for f in _sent(proxy)[refused:]]
    assert sorted(ids) == sorted(f.id for f in up.result.findings)  # each once
    assert set(_in_security_hub(proxy)) == {f.id for f in up.result.findings}


def test_an_unchanged_finding_is_queued_again_after_a_day_and_a_newer_state_replaces_a_waiting_one(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "k.db")
    finding = {"id": "f1", "key_arn": "arn:aws:kms:us-east-1:111122223333:key/k", "severity": "high"}
    assert store.queue_export("export:x", [finding], now=1000.0) == (1, 0)
    assert store.queue_export("export:x", [finding], now=2000.0) == (0, 0)  # unchanged, within a day
    changed = {**finding, "severity": "critical"}
    assert store.queue_export("export:x", [changed], now=3000.0) == (1, 0)
    waiting = store.due_alerts(10_000.0, sink="export:x")
    assert [item["event"]["finding"]["severity"] for item in waiting] == ["critical"]  # the older one replaced
    assert waiting[0]["event"]["first_at"] == 1000.0  # CreatedAt stays the first time it was sent
    store.mark_delivered_many([waiting[0]["event_id"]], "export:x", 3001.0)
    assert store.queue_export("export:x", [changed], now=3000.0 + 86_400) == (1, 0)  # a day later: again
    assert store.queue_export("export:x", [], now=100_000.0) == (0, 1)  # gone: archived once
    assert store.queue_export("export:x", [], now=200_000.0) == (0, 0)
    [archived] = [i for i in store.due_alerts(300_000.0, sink="export:x") if i["event"]["state"] == "ARCHIVED"]
    assert archived["event"]["finding"]["severity"] == "critical"
    store.close()


def test_a_config_export_is_validated(tmp_path: Path) -> None:
    from kmsaudit.errors import ConfigError

    config = tmp_path / "k.toml"
    config.write_text(config_text() + '\n[[export]]\ntype = "securityhub"\nregion = "moon-1"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "export" in str(caught.value) and "\n" not in str(caught.value)
    config.write_text(config_text() + EXPORT + EXPORT)
    with pytest.raises(ConfigError, match="same name"):
        load_config(config)


def test_each_finding_carries_its_first_verified_fix_as_the_recommendation(
    tmp_path: Path, estate: Estate, proxy: AwsProxy
) -> None:
    # Issue #27: ASFF `Remediation` from the verified remediation (SPEC §4), as Security Hub shows it.
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")) + EXPORT)
    findings = {f.id: f for f in _scan(config).result.findings}
    sent = {f["Id"]: f for f in _sent(proxy)}
    assert set(sent) == set(findings)
    public = next(i for i, f in findings.items() if f.access == "public")
    text = sent[public]["Remediation"]["Recommendation"]["Text"]
    assert text.startswith('confine the "*" statement') and "(verified by kmsaudit): aws kms put-key-policy" in text
    grant = next(i for i, f in findings.items() if f.via == ("grant",))
    assert sent[grant]["Remediation"]["Recommendation"]["Text"].startswith("revoke grant ")
    assert all(len(f["Remediation"]["Recommendation"]["Text"]) <= 512 for f in sent.values())
