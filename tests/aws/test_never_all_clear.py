"""Issue #13.3–#13.5 and #13.7 against moto: a failure never reads as all-clear, in the output, the
exit code, the drift, or the metrics that the shipped Prometheus rules alert on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
from awsproxy import AwsProxy
from estate import Estate, config_text
from prometheus_client.parser import text_string_to_metric_families
from test_scan_cli import scan

from kmsaudit.demo.emulator import client, create_key, key_policy

# AWS unreachable: botocore would retry ten times with backoff (~75 s a scan); two attempts
# show the same behaviour.
FEW_RETRIES = "max_attempts = 2"


def samples(textfile: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(textfile.read_text())
        for s in family.samples
    }


def public_findings(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(
        v for (name, labels), v in metrics.items() if name == "kmsaudit_findings" and ("access", "public") in labels
    )


def drift_json(config: Path, endpoint: str) -> list[dict[str, object]]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
    proc = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "drift", "--config", str(config), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def org_estate() -> tuple[str, str]:
    orgs = boto3.client("organizations", region_name="us-east-1")
    orgs.create_organization(FeatureSet="ALL")
    member = orgs.create_account(AccountName="keys", Email="keys@example.com")["CreateAccountStatus"]["AccountId"]
    key = create_key(
        member,
        "us-east-1",
        key_policy(member, {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}),
    )
    return member, key["Arn"]


def test_organization_discovery_failing_is_a_failed_scope_not_a_clean_estate(tmp_path: Path, aws: str) -> None:
    """#13.3: without an organization to read, the scan said "No cross-account access found", 0/0
    scopes, exit 0, and no scope-failed event."""
    config = tmp_path / "k.toml"
    config.write_text('[scan]\nregions = ["us-east-1"]\n[organization]\nrole_name = "KmsAuditReadOnly"\n')
    proc = scan(config, endpoint=aws)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "No cross-account access found" not in proc.stdout
    assert "organization" in proc.stderr and "failed" in proc.stderr
    events = drift_json(config, aws)
    assert [(e["kind"], e["account"]) for e in events] == [("scope-failed", "organization")]


def test_when_discovery_fails_later_the_members_last_state_is_kept_everywhere(tmp_path: Path, aws: str) -> None:
    member, key_arn = org_estate()
    config = tmp_path / "k.toml"
    config.write_text('[scan]\nregions = ["us-east-1"]\n[organization]\nrole_name = "KmsAuditReadOnly"\n')
    textfile = tmp_path / "k.prom"
    first = scan(config, "--metrics-textfile", str(textfile), endpoint=aws)
    assert first.returncode == 0, first.stderr
    assert public_findings(samples(textfile)) == 1
    proxy = AwsProxy(aws, deny_operations={"DescribeOrganization"})
    try:
        second = scan(config, "--metrics-textfile", str(textfile), endpoint=proxy.start())
    finally:
        proxy.stop()
    assert second.returncode == 4
    metrics = samples(textfile)
    assert public_findings(metrics) == 1  # the member's public key still counts: nothing resolves
    assert metrics[("kmsaudit_scope_up", (("account", member), ("region", "us-east-1")))] == 0
    env = {**os.environ, "AWS_ENDPOINT_URL": aws}
    findings = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "findings", "--config", str(config), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert key_arn in {f["key_arn"] for f in json.loads(findings.stdout)}
    assert not [e for e in drift_json(config, aws) if e["kind"] == "removed"]


def test_every_scope_failing_is_said_and_the_metrics_keep_the_last_good_state(
    tmp_path: Path, estate: Estate, aws: str
) -> None:
    """#13.4: with the endpoint down the scan printed "No cross-account access found" and every
    kmsaudit_findings series vanished, so KmsAuditPublicKey resolved."""
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db"), extra=FEW_RETRIES))
    textfile = tmp_path / "k.prom"
    assert scan(config, "--metrics-textfile", str(textfile), endpoint=aws).returncode == 0
    healthy = samples(textfile)
    assert public_findings(healthy) == 1
    down = scan(config, "--metrics-textfile", str(textfile), endpoint="http://127.0.0.1:9")
    assert down.returncode == 4
    assert "No cross-account access found" not in down.stdout
    assert "no scope could be read" in down.stdout.lower()
    metrics = samples(textfile)
    assert public_findings(metrics) == 1
    findings = {k: v for k, v in metrics.items() if k[0] == "kmsaudit_findings"}
    assert findings == {k: v for k, v in healthy.items() if k[0] == "kmsaudit_findings"}
    ups = [v for (name, _), v in metrics.items() if name == "kmsaudit_scope_up"]
    assert ups and set(ups) == {0.0}
    last_ok = {k: v for k, v in metrics.items() if k[0] == "kmsaudit_last_successful_scan_timestamp_seconds"}
    assert last_ok == {k: v for k, v in healthy.items() if k[0] == "kmsaudit_last_successful_scan_timestamp_seconds"}


def test_textfile_drift_counters_start_at_zero_and_never_go_back(tmp_path: Path, estate: Estate, aws: str) -> None:
    """#13.5: in textfile mode kmsaudit_drift_events_total{kind="added",severity="high"} went 1,
    1, absent over three scans (each file held one run's counts): increase() missed events."""
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db"), extra=FEW_RETRIES))
    textfile = tmp_path / "k.prom"
    added = ("kmsaudit_drift_events_total", (("kind", "added"), ("severity", "high")))
    seen = []
    for step in range(3):
        if step == 1:  # a new external account trusted by a key: one `added` event, severity high
            kms = client("kms", "111111111111", "eu-west-1")
            doc = json.loads(kms.get_key_policy(KeyId=estate.ids["narrowed"], PolicyName="default")["Policy"])
            doc["Statement"].append(
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::999988887777:root"},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                }
            )
            kms.put_key_policy(KeyId=estate.ids["narrowed"], PolicyName="default", Policy=json.dumps(doc))
        proc = scan(config, "--metrics-textfile", str(textfile), endpoint=aws)
        assert proc.returncode == 0, proc.stderr
        seen.append(samples(textfile).get(added))
    assert seen == [0.0, 1.0, 1.0]


def test_scan_keeps_its_exit_code_when_the_reader_goes_away(tmp_path: Path, estate: Estate, aws: str) -> None:
    """#13.7: `kmsaudit scan --fail-on critical | head -1` exited 0, and the failed-scope lines on
    stderr were lost."""
    config = tmp_path / "k.toml"
    config.write_text(config_text(("111111111111", "999999999999"), store=str(tmp_path / "k.db")))
    proxy = AwsProxy(aws, deny_assume={"999999999999"})
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.start()}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kmsaudit", "scan", "--config", str(config), "--fail-on", "high"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        proxy.stop()
    assert code == 3, err  # the public key (high) is at --fail-on high
    assert "scope 999999999999/us-east-1 failed" in err and "Traceback" not in err
