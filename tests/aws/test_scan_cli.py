"""`kmsaudit scan` (SPEC §6) as cron runs it: a subprocess against moto, exit codes 0 / 3 / 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from awsproxy import AwsProxy, like_real_kms
from estate import A, B, C, D, Estate, client, config_text, key_policy, role
from helpers import CONTRACT_FIELDS


@pytest.fixture
def aws(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every request of these tests answered as real KMS answers (awsproxy.like_real_kms)."""
    yield from like_real_kms(aws, monkeypatch)


def scan(config: Path, *args: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
    return subprocess.run(
        [sys.executable, "-m", "kmsaudit", "scan", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_scan_json_is_the_contract_and_exit_0(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    proc = scan(config, "--format", "json", endpoint=aws)
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout)
    assert all(set(f) >= CONTRACT_FIELDS for f in findings)
    reader = [f for f in findings if f["principal"] == role(B, "Reader") and f["access"] == "effective"]
    assert {f["key_arn"] for f in reader} == {estate.keys["shared"], estate.keys["narrowed"]}
    assert all(f["principal_account"] == B and f["key_account"] == A for f in reader)
    # logs are JSON lines on stderr when it is not a terminal; stdout holds only findings
    events = [json.loads(line)["event"] for line in proc.stderr.splitlines() if line.startswith("{")]
    assert "scan.done" in events and events.count("scope.done") == 6


def test_fail_on_and_failed_scopes_exit_codes(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text((A, B, C, D), store=str(tmp_path / "k.db")))
    proxy = AwsProxy(aws, deny_assume={D})
    url = proxy.start()
    try:
        failed = scan(config, endpoint=url)
        flagged = scan(config, "--fail-on", "high", endpoint=url)
    finally:
        proxy.stop()
    assert failed.returncode == 4  # scan finished, some scopes failed
    assert f"kmsaudit: scope {D}/us-east-1 failed: AssumeRole" in failed.stderr
    assert "6 keys in 6/8 scopes" in failed.stdout
    assert flagged.returncode == 3  # the public (conditional: high) key is at --fail-on high


def test_scan_findings_and_drift_as_ocsf(tmp_path: Path, estate: Estate, aws: str) -> None:
    """Issue #16: the same findings and drift, as OCSF Detection Findings a SIEM ingests."""
    from py_ocsf_models.events.findings.detection_finding import DetectionFinding

    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    plain = scan(config, "--format", "json", endpoint=aws)
    assert plain.returncode == 0, plain.stderr
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["narrowed"],
        PolicyName="default",
        Policy=key_policy(
            A,
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::555566667777:root"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            },
        ),
    )
    proc = scan(config, "--format", "ocsf-jsonl", endpoint=aws)
    assert proc.returncode == 0, proc.stderr
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    for obj in objects:
        DetectionFinding.model_validate(obj)
    by_uid = {o["finding_info"]["uid"]: o for o in objects}
    stored = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "findings", "--config", str(config), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sorted(by_uid) == sorted(f["id"] for f in json.loads(stored.stdout))  # one OCSF object per finding
    partner = next(o for o in objects if o["unmapped"]["kmsaudit"]["principal"] == "arn:aws:iam::555566667777:root")
    assert partner["resources"][0]["uid"] == estate.keys["narrowed"] and partner["cloud"]["account"]["uid"] == A
    drift = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "drift", "--config", str(config), "--format", "ocsf"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    events = json.loads(drift.stdout)
    added = [e for e in events if e["unmapped"]["kmsaudit"]["kind"] == "added"]
    assert added and all(DetectionFinding.model_validate(e) and e["activity_id"] == 1 for e in added)
    removed = [e for e in events if e["unmapped"]["kmsaudit"]["kind"] == "removed"]
    assert all(e["status"] == "Resolved" and e["activity_id"] == 3 for e in removed)
    # Issue #24, defect 9: a SIEM closes what it received — the Close event of each removed finding
    # carries the uid `findings --format ocsf` gave that finding in the first snapshot, and each
    # Create the uid of the finding it announces.
    first = json.loads(plain.stdout)
    first_ids = {f["id"] for f in (first["findings"] if isinstance(first, dict) else first)}
    assert removed and {e["finding_info"]["uid"] for e in removed} <= first_ids
    assert {e["finding_info"]["uid"] for e in added} <= set(by_uid)
