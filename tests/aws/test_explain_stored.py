"""Issue #27, SPEC §4 and §6: `kmsaudit explain FINDING_ID` on stored findings (scanned from moto's
server), and the loop a person on call runs with it — apply the first remediation to AWS, scan
again, and the finding is gone while every other finding stays as it was unless the remediation
listed it in `also_changes`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from estate import A, B, C, Estate, client, config_text, key_policy, role
from loopback import JsonReceiver

from kmsaudit.cli.main import main
from kmsaudit.config.settings import load_config
from kmsaudit.delivery.alerts import build_sinks
from kmsaudit.run.scan import scan_and_record


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _findings(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, dict[str, Any]]:
    code, out, _ = _run(capsys, "findings", "--config", str(config), "--format", "json")
    assert code == 0
    return {f["id"]: f for f in json.loads(out)}


def _scan(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, _, err = _run(capsys, "scan", "--config", str(config), "--format", "json")
    assert code in (0, 3), err


@pytest.fixture
def scanned(tmp_path: Path, estate: Estate, capsys: pytest.CaptureFixture[str]) -> Path:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    _scan(capsys, config)
    return config


def _explain(capsys: pytest.CaptureFixture[str], config: Path, finding_id: str) -> dict[str, Any]:
    code, out, err = _run(capsys, "explain", finding_id, "--config", str(config), "--format", "json")
    assert code == 0, err
    return json.loads(out)


def _unchanged_except(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], gone: str, also: list[str]):
    assert gone not in after
    for finding_id, finding in before.items():
        if finding_id != gone and finding_id not in also:
            assert after.get(finding_id) == finding, f"{finding['principal']} on {finding['key_arn']} changed"


def test_the_first_remediation_applied_to_aws_removes_the_public_finding_and_nothing_else(
    scanned: Path, estate: Estate, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _findings(capsys, scanned)
    public = next(f for f in before.values() if f["access"] == "public" and f["key_arn"] == estate.keys["public"])
    shown = _explain(capsys, scanned, public["id"][:10])  # a prefix of the id will do
    assert shown["id"] == public["id"]
    (element,) = shown["explanation"]  # the "*" statement, open on kms:ViaService
    assert element["source"] == "key-policy" and element["part"] == "undecided"
    assert element["conditions"][0]["key"] == "kms:ViaService" and element["conditions"][0]["open"] is True
    first = shown["remediation"][0]
    assert first["kind"] == "key-policy" and first["verified"] is True
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["public"], PolicyName="default", Policy=first["key_policy"]
    )
    _scan(capsys, scanned)
    _unchanged_except(before, _findings(capsys, scanned), public["id"], first["also_changes"])


def test_revoking_the_grant_it_names_removes_the_grantees_access(
    scanned: Path, estate: Estate, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _findings(capsys, scanned)
    granted = next(f for f in before.values() if f["principal"] == role(C, "Batch"))
    shown = _explain(capsys, scanned, granted["id"])
    fix = next(r for r in shown["remediation"] if r["kind"] == "grant")
    assert fix["verified"] and fix["command"].startswith("aws kms revoke-grant --key-id ")
    client("kms", A).revoke_grant(KeyId=estate.ids["granted"], GrantId=fix["grant_id"])
    _scan(capsys, scanned)
    _unchanged_except(before, _findings(capsys, scanned), granted["id"], fix["also_changes"])


def test_effective_access_names_the_iam_policy_and_its_fix_works_in_iam(
    scanned: Path, estate: Estate, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _findings(capsys, scanned)
    reader = next(
        f
        for f in before.values()
        if f["principal"] == role(B, "Reader") and f["key_arn"] == estate.keys["shared"] and f["access"] == "effective"
    )
    shown = _explain(capsys, scanned, reader["id"])
    sources = [(e["source"], e["name"]) for e in shown["explanation"]]
    assert ("iam-policy", "inline:use-keys") in sources and sources[0][0] == "key-policy"
    fix = next(r for r in shown["remediation"] if r["kind"] == "iam-policy")
    # A new inline policy of the role's own, beside use-keys (which grants): only this role changes.
    assert (
        fix["verified"]
        and fix["policy"].startswith("KmsAuditDeny-")
        and "(inline:use-keys grants them)" in fix["summary"]
    )
    assert fix["command"].startswith(f"aws iam put-role-policy --role-name Reader --policy-name {fix['policy']} ")
    client("iam", B).put_role_policy(RoleName="Reader", PolicyName=fix["policy"], PolicyDocument=fix["iam_policy"])
    _scan(capsys, scanned)
    _unchanged_except(before, _findings(capsys, scanned), reader["id"], fix["also_changes"])


def test_the_table_says_why_and_shows_the_policy_diff(scanned: Path, estate: Estate, capsys) -> None:
    public = next(f for f in _findings(capsys, scanned).values() if f["access"] == "public")
    code, out, _ = _run(capsys, "explain", public["id"], "--config", str(scanned))
    assert code == 0
    assert "Why (in evaluation order;" in out and "kms:ViaService" in out
    assert (
        f"$ kmsaudit explain {public['id'][:12]} --format json | jq -r '.remediation[0].key_policy' > policy.json"
        in out
    )
    assert (
        "changed a statement:" in out and '+      "aws:PrincipalAccount"' in out and "$ aws kms put-key-policy" in out
    )


def test_a_snapshot_older_than_the_evidence_is_said_so_not_guessed(
    scanned: Path, estate: Estate, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    public = next(f for f in _findings(capsys, scanned).values() if f["access"] == "public")
    with sqlite3.connect(tmp_path / "k.db") as db:  # as a database written before this release
        db.execute("DELETE FROM evidence_versions")
    code, out, err = _run(capsys, "explain", public["id"], "--config", str(scanned))
    assert code == 1 and out == ""
    assert "has no stored grants and properties" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("finding_id", "message"),
    [("0123", "at least 8 characters"), ("ffffffffffffffff", "no finding ffffffffffffffff in snapshot 1")],
)
def test_an_unknown_id_is_a_usage_error(scanned: Path, capsys, finding_id: str, message: str) -> None:
    code, _, err = _run(capsys, "explain", finding_id, "--config", str(scanned))
    assert code == 2 and message in err


def test_explain_of_an_earlier_snapshot_uses_that_snapshots_documents(
    scanned: Path, estate: Estate, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = next(
        f
        for f in _findings(capsys, scanned).values()
        if f["key_arn"] == estate.keys["shared"] and f["principal"] == f"arn:aws:iam::{B}:root"
    )
    client("kms", A).put_key_policy(
        KeyId=estate.ids["shared"],
        PolicyName="default",
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "Admin",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {
                        "Sid": "Renamed",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
                        "Action": "kms:Decrypt",
                        "Resource": "*",
                    },
                ],
            }
        ),
    )
    _scan(capsys, scanned)
    old = _explain(capsys, scanned, shared["id"] + "")
    assert old["explanation"][0]["statement"] == "Renamed"  # the latest snapshot: the new statement
    code, out, _ = _run(
        capsys, "explain", shared["id"], "--config", str(scanned), "--snapshot", "1", "--format", "json"
    )
    assert code == 0
    assert json.loads(out)["explanation"][0]["statement"] == "Allow an external account to use this KMS key"


Receiver = JsonReceiver


PARTNER = "555566667777"


@pytest.mark.parametrize("documents_kept", [True, False, "no time"])
def test_an_alert_says_why_and_the_first_verified_fix(
    tmp_path: Path, estate: Estate, monkeypatch: pytest.MonkeyPatch, documents_kept: bool | str
) -> None:
    # Issue #27: "alerts carry a one-line why and the first remediation" — and when the documents
    # cannot be read back, the alert still goes, saying where to ask (never held back for it).
    receiver = Receiver()
    monkeypatch.setenv("KMSAUDIT_TEST_HOOK", f"http://127.0.0.1:{receiver.start()}/hook")
    config = tmp_path / "k.toml"
    config.write_text(
        config_text(store=str(tmp_path / "k.db"))
        + '\n[[alerts]]\nname = "hook"\ntype = "webhook"\nurl_env = "KMSAUDIT_TEST_HOOK"\nmin_severity = "medium"\n'
    )
    settings = load_config(config)
    try:
        asyncio.run(scan_and_record(settings, build_sinks(settings.alerts)))  # the baseline
        client("kms", A, "eu-west-1").put_key_policy(
            KeyId=estate.ids["narrowed"],
            PolicyName="default",
            Policy=key_policy(
                A,
                {
                    "Sid": "Partner",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{PARTNER}:root"},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                },
            ),
        )
        if documents_kept is False:
            monkeypatch.setattr("kmsaudit.store.evidence.Evidence.stored_key", lambda *a, **k: None)
        if documents_kept == "no time":  # explaining is bounded in time: past it, the alert goes without
            monkeypatch.setattr("kmsaudit.delivery.why.ALERT_SECONDS", 0.0)
        asyncio.run(scan_and_record(settings, build_sinks(settings.alerts)))
    finally:
        receiver.stop()
    (alert,) = [e for e in receiver.events if e["kind"] == "added" and e["principal"].endswith(f"{PARTNER}:root")]
    if documents_kept is True:
        assert alert["why"] == 'given by key policy statement "Partner"'
        assert alert["remediation"]["verified"] is True
        assert (
            alert["remediation"]["summary"] == f'remove statement "Partner" (it names only arn:aws:iam::{PARTNER}:root)'
        )
    else:
        assert alert["why"] == f"kmsaudit explain {alert['after']['id']}" and alert["remediation"] is None
