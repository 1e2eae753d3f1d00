"""Issue #15 end to end through moto: accepting known access, widening it, its entry expiring."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from estate import A, Estate, client, config_text, key_policy
from loopback import JsonReceiver

from kmsaudit.config.settings import load_config
from kmsaudit.delivery.alerts import build_sinks
from kmsaudit.run.scan import scan_and_record

PARTNER = "555566667777"  # not audited, not trusted


Receiver = JsonReceiver


def _partner(estate: Estate, *actions: str) -> None:
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["narrowed"],
        PolicyName="default",
        Policy=key_policy(
            A,
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{PARTNER}:root"},
                "Action": list(actions),
                "Resource": "*",
            },
        ),
    )


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsaudit", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def test_accept_widen_expire(tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver()
    monkeypatch.setenv("KMSAUDIT_TEST_HOOK", f"http://127.0.0.1:{receiver.start()}/hook")
    config = tmp_path / "k.toml"
    config.write_text(
        config_text(store=str(tmp_path / "k.db"))
        + '\n[acceptance]\nfiles = ["accepted.toml"]\n'
        + '\n[[alerts]]\nname = "hook"\ntype = "webhook"\nurl_env = "KMSAUDIT_TEST_HOOK"\nmin_severity = "medium"\n'
    )
    key = estate.keys["narrowed"]

    def scan(today: date) -> list[tuple[str, str]]:
        settings = load_config(config, today=today)
        recorded = asyncio.run(scan_and_record(settings, build_sinks(settings.alerts), today=today))
        return [(e.kind, e.principal) for e in recorded.events]

    try:
        _partner(estate, "kms:Decrypt")
        scan(date(2026, 11, 27))  # the baseline
        findings = json.loads(_cli(config, "findings", "--format", "json").stdout)
        (partner,) = [f for f in findings if f["principal"] == f"arn:aws:iam::{PARTNER}:root"]
        assert partner["accepted"] is False and partner["severity"] == "high"

        accepted = _cli(
            config,
            "accept",
            partner["id"],
            "--reason",
            "partner reads exports",
            "--owner",
            "team-data",
            "--expires",
            "2027-06-30",
            "--ticket",
            "SEC-42",
            "--id",
            "partner-decrypt",
            "--write",
        )
        assert accepted.returncode == 0, accepted.stderr
        assert 'id = "partner-decrypt"' in accepted.stdout and (tmp_path / "accepted.toml").exists()
        assert f'keys = ["{key}"]' in (tmp_path / "accepted.toml").read_text()

        assert scan(date(2026, 11, 28)) == []  # accepting changes no access: no drift
        findings = json.loads(_cli(config, "findings", "--format", "json", "--accepted").stdout)
        assert [(f["principal"], f["accepted_by"]) for f in findings] == [
            (f"arn:aws:iam::{PARTNER}:root", "partner-decrypt")
        ]
        table = _cli(config, "findings").stdout
        assert "[accepted: partner-decrypt]" in table
        assert f"arn:aws:iam::{PARTNER}:root" not in _cli(config, "findings", "--unaccepted").stdout
        assert receiver.events == []

        _partner(estate, "kms:Decrypt", "kms:Encrypt")  # widened beyond what was accepted
        assert scan(date(2026, 11, 29)) == [("widened", f"arn:aws:iam::{PARTNER}:root")]
        (alert,) = receiver.events
        assert alert["kind"] == "widened" and alert["after"]["outgrew"] == "partner-decrypt"
        assert alert["after"]["accepted"] is False

        _partner(estate, "kms:Decrypt")  # back within the entry: accepted again, no alert
        assert scan(date(2026, 11, 30)) == [("narrowed", f"arn:aws:iam::{PARTNER}:root")]
        assert len(receiver.events) == 1

        assert scan(date(2027, 7, 1)) == [("acceptance-expired", f"arn:aws:iam::{PARTNER}:root")]
        expired = receiver.events[-1]
        assert expired["kind"] == "acceptance-expired" and expired["severity"] == "high"
        assert expired["before"]["accepted_by"] == "partner-decrypt"
        assert scan(date(2027, 7, 2)) == []  # said once
    finally:
        receiver.stop()

    history = _cli(config, "history", key).stdout
    assert "accepted (entry partner-decrypt)" in history and "lapsed (entry partner-decrypt)" in history
    assert "outgrown (beyond entry partner-decrypt)" in history


def test_accepting_public_access_needs_allow_public(tmp_path: Path, estate: Estate, aws: str) -> None:
    (tmp_path / "accepted.toml").write_text(
        '[[accept]]\nid = "everyone"\nkeys = ["arn:aws:kms:*"]\nprincipals = ["*"]\nactions = ["kms:Decrypt"]\n'
        'access = ["public"]\nreason = "r"\nowner = "o"\nexpires = 2027-01-01\n'
    )
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")) + '\n[acceptance]\nfiles = ["accepted.toml"]\n')
    proc = _cli(config, "scan")
    assert proc.returncode == 2
    assert "entry 'everyone' accepts public access" in proc.stderr and "accepted.toml" in proc.stderr
