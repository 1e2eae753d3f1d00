"""SPEC §5 on a real SQLite file against moto: drift that never lies."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from awsproxy import AwsProxy, like_real_kms
from estate import A, B, Estate, client, config_text, key_policy, role

from kmsaudit.config.settings import load_config
from kmsaudit.run.scan import run_scan
from kmsaudit.store.database import Store


@pytest.fixture
def aws(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every request of these tests answered as real KMS answers (awsproxy.like_real_kms)."""
    yield from like_real_kms(aws, monkeypatch)


async def _scan(tmp_path: Path, store: Store) -> list:
    path = tmp_path / "k.toml"
    path.write_text(config_text(store=str(store.path)))
    _, events = store.save_scan(await run_scan(load_config(path)))
    return [(e.kind, e.key_arn, e.principal) for e in events]


def _put(estate: Estate, *statements: dict) -> None:
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["narrowed"], PolicyName="default", Policy=key_policy(A, *statements)
    )


PARTNER = "555566667777"  # not audited, not trusted: outside the zone of trust
READER = {
    "Sid": "Reader",
    "Effect": "Allow",
    "Principal": {"AWS": role(B, "Reader")},
    "Action": "kms:Decrypt",
    "Resource": "*",
}
OUTSIDER = {
    "Sid": "Partner",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{PARTNER}:root"},
    "Action": ["kms:Decrypt", "kms:DescribeKey"],
    "Resource": "*",
}


async def test_added_removed_widened_policy_changed(tmp_path: Path, estate: Estate) -> None:
    store = Store(tmp_path / "kmsaudit.db")
    assert await _scan(tmp_path, store) == []  # the first scan is a baseline, not hundreds of "added"
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    key = estate.keys["narrowed"]

    _put(estate, READER, OUTSIDER)
    assert await _scan(tmp_path, store) == [("added", key, f"arn:aws:iam::{PARTNER}:root")]
    added = store.drift()[-1]
    assert added["after"]["actions"] == ["kms:Decrypt", "kms:DescribeKey"] and added["before"] is None

    _put(estate, READER)
    assert await _scan(tmp_path, store) == [("removed", key, f"arn:aws:iam::{PARTNER}:root")]

    _put(estate, READER | {"Action": ["kms:Decrypt", "kms:Encrypt"]})
    events = await _scan(tmp_path, store)
    assert sorted(events) == [("widened", key, role(B, "Reader"))] * 2  # potential and effective

    _put(estate, READER | {"Action": ["kms:Decrypt", "kms:Encrypt"], "Sid": "Renamed"})
    assert await _scan(tmp_path, store) == [("policy-changed", key, "")]

    assert await _scan(tmp_path, store) == []  # nothing changed: nothing to say
    versions = store.history(key)
    assert len(versions) == 5 and '"Renamed"' in versions[-1]["text"]


async def test_a_failed_scope_never_looks_like_access_removed(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "kmsaudit.db")
    await _scan(tmp_path, store)
    before = sorted(f["id"] for f in store.findings())
    proxy = AwsProxy(aws, deny_assume={A})
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        events = await _scan(tmp_path, store)
    finally:
        proxy.stop()
    assert sorted(events) == [("scope-failed", "", "")] * 3  # A's two regions, and A's IAM
    assert {(e["account"], e["region"]) for e in store.drift()} == {(A, "eu-west-1"), (A, "us-east-1"), (A, "global")}
    # A's role keeps its effective access to B's key although A's IAM could not be read:
    assert sorted(f["id"] for f in store.findings()) == before  # the last good state carries over
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    assert await _scan(tmp_path, store) == []  # healthy again: no spurious drift


def test_cli_findings_drift_and_history(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    env = {**os.environ, "AWS_ENDPOINT_URL": aws}

    def kmsaudit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kmsaudit", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    assert kmsaudit("scan").returncode == 0
    _put(estate, READER, OUTSIDER)
    scan = kmsaudit("scan", "--fail-on", "critical")
    assert scan.returncode == 0, scan.stderr  # the drift is "high": below critical
    assert f"snapshot 2 in {tmp_path / 'k.db'}" in scan.stdout
    assert "drift since the last complete scan (1 event):" in scan.stdout
    drift = json.loads(kmsaudit("drift", "--format", "json").stdout)
    assert [(e["kind"], e["principal"], e["severity"]) for e in drift] == [
        ("added", f"arn:aws:iam::{PARTNER}:root", "high")
    ]
    assert {"kind", "key_arn", "principal", "before", "after", "severity", "snapshot_id", "detected_at"} <= set(
        drift[0]
    )
    findings = json.loads(kmsaudit("findings", "--format", "json").stdout)
    assert f"arn:aws:iam::{PARTNER}:root" in {f["principal"] for f in findings}
    first = json.loads(kmsaudit("findings", "--format", "json", "--snapshot", "1").stdout)
    assert f"arn:aws:iam::{PARTNER}:root" not in {f["principal"] for f in first}
    history = kmsaudit("history", estate.keys["narrowed"])
    assert history.returncode == 0
    added_lines = [line for line in history.stdout.splitlines() if line.startswith("+")]
    assert any(f'"arn:aws:iam::{PARTNER}:root"' in line for line in added_lines)
    # Issue #13: a key is found by its alias or its id too, and the tables show the alias.
    by_alias = kmsaudit("history", "alias/shared")
    assert by_alias.returncode == 0 and by_alias.stdout == kmsaudit("history", estate.keys["shared"]).stdout
    assert kmsaudit("history", estate.ids["narrowed"]).stdout == history.stdout
    unknown = kmsaudit("history", "alias/nope")
    assert unknown.returncode == 2 and "alias/nope" in unknown.stderr
    assert f"{estate.keys['shared']}  (alias/shared)" in kmsaudit("findings").stdout
