"""`kmsaudit evaluate` (SPEC §6) as a user runs it: a real subprocess, files in, output out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import CONTRACT_FIELDS, KEY_ARN, ROLE_B, ROOT_B, B, seed_json_blocks


def kmsaudit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmsaudit", *args], capture_output=True, text=True, timeout=60)


def _write(tmp: Path, name: str, data: object) -> str:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _seed_003_files(tmp: Path) -> tuple[str, str]:
    blocks = [b for b in seed_json_blocks("003") if "Effect" in b]
    key_stmt = next(s for s in blocks if s.get("Principal") == {"AWS": [ROOT_B]})
    iam_stmt = next(s for s in blocks if s.get("Sid") == "AllowUseOfKeyInAccount111122223333")
    enable = {
        "Sid": "Enable IAM policies",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    key_policy = _write(tmp, "key-policy.json", {"Version": "2012-10-17", "Statement": [enable, key_stmt]})
    details = {
        "RoleDetailList": [
            {
                "RoleName": "ExampleRole",
                "Arn": ROLE_B,
                "AttachedManagedPolicies": [],
                "RolePolicyList": [
                    {"PolicyName": "UseKey", "PolicyDocument": {"Version": "2012-10-17", "Statement": [iam_stmt]}}
                ],
            }
        ],
        "UserDetailList": [],
        "GroupDetailList": [],
        "Policies": [],
    }
    return key_policy, _write(tmp, "iam-444455556666.json", details)


def test_json_output_is_the_contract_shape(tmp_path: Path) -> None:
    key_policy, iam = _seed_003_files(tmp_path)
    proc = kmsaudit(
        "evaluate", "--key-policy", key_policy, "--key-arn", KEY_ARN, "--iam", f"{B}={iam}", "--format", "json"
    )
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout)
    assert {(f["principal"], f["access"]) for f in findings} == {(ROOT_B, "potential"), (ROLE_B, "effective")}
    for f in findings:
        assert set(f) >= CONTRACT_FIELDS
        assert f["actions"] == sorted(f["actions"]) and all(a.startswith("kms:") for a in f["actions"])
        assert f["via"] == sorted(f["via"]) and f["key_account"] == "111122223333"
        assert f["region"] == "us-west-2" and f["principal_account"] == B


def test_jsonl_and_table(tmp_path: Path) -> None:
    key_policy, iam = _seed_003_files(tmp_path)
    proc = kmsaudit(
        "evaluate", "--key-policy", key_policy, "--key-arn", KEY_ARN, "--iam", f"{B}={iam}", "--format", "jsonl"
    )
    assert [json.loads(line)["access"] for line in proc.stdout.splitlines()] == ["effective", "potential"]
    proc = kmsaudit("evaluate", "--key-policy", key_policy, "--key-arn", KEY_ARN, "--iam", f"{B}={iam}")
    assert proc.returncode == 0
    assert ROLE_B in proc.stdout and "effective" in proc.stdout and "2 findings on 1 key:" in proc.stdout


def test_key_arn_is_guessed_from_the_enable_iam_statement(tmp_path: Path) -> None:
    key_policy, _ = _seed_003_files(tmp_path)
    proc = kmsaudit("evaluate", "--key-policy", key_policy, "--format", "json")
    assert proc.returncode == 0
    assert "assuming the key is in account 111122223333" in proc.stderr
    assert json.loads(proc.stdout)[0]["key_account"] == "111122223333"


def test_get_key_policy_output_shape_is_accepted(tmp_path: Path) -> None:
    doc = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}]}
    path = _write(tmp_path, "p.json", {"Policy": json.dumps(doc), "PolicyName": "default"})
    proc = kmsaudit("evaluate", "--key-policy", path, "--key-arn", KEY_ARN, "--format", "json", "--fail-on", "high")
    assert proc.returncode == 3  # a critical public finding is at or above --fail-on high
    assert json.loads(proc.stdout)[0]["severity"] == "critical"


def test_grants_file_from_list_grants(tmp_path: Path) -> None:
    key_policy, _ = _seed_003_files(tmp_path)
    grants = _write(
        tmp_path,
        "grants.json",
        {
            "Grants": [
                {
                    "KeyId": KEY_ARN,
                    "GrantId": "abc",
                    "GranteePrincipal": f"arn:aws:iam::{B}:role/Grantee",
                    "Operations": ["Decrypt", "GenerateDataKey"],
                    "Constraints": {"EncryptionContextSubset": {"k": "v"}},
                }
            ]
        },
    )
    proc = kmsaudit(
        "evaluate", "--key-policy", key_policy, "--key-arn", KEY_ARN, "--grants", grants, "--format", "json"
    )
    grant = next(f for f in json.loads(proc.stdout) if f["via"] == ["grant"])
    assert grant["principal"] == f"arn:aws:iam::{B}:role/Grantee" and grant["conditional"] is True


def test_missing_file_is_exit_2_with_one_line(tmp_path: Path) -> None:
    proc = kmsaudit("evaluate", "--key-policy", str(tmp_path / "nope.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope.json" in proc.stderr and "Traceback" not in proc.stderr


def test_non_json_input_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    key_policy, _ = _seed_003_files(tmp_path)
    bad = _write(tmp_path, "iam.json", "<html>not json</html>")
    proc = kmsaudit("evaluate", "--key-policy", key_policy, "--iam", f"{B}={bad}")
    assert proc.returncode == 2 and "--iam" in proc.stderr and "iam.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = kmsaudit("evaluate", "--key-policy", key_policy, "--iam", "notanaccount=x")
    assert proc.returncode == 2 and "12-digit" in proc.stderr


def test_unparseable_policy_inside_valid_input_is_a_finding(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.json", {"Policy": "{not a policy", "PolicyName": "default"})
    proc = kmsaudit("evaluate", "--key-policy", path, "--key-arn", KEY_ARN, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["kind"] == "unparseable"


def test_lints_are_listed_separately(tmp_path: Path) -> None:
    doc = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": ROOT_B},
                "Action": ["kms:", "kms:ScheduleKeyDeletion"],
                "Resource": "*",
            }
        ]
    }
    path = _write(tmp_path, "p.json", doc)
    proc = kmsaudit("evaluate", "--key-policy", path, "--key-arn", KEY_ARN, "--lints", "--format", "json")
    kinds = sorted(lint["kind"] for lint in json.loads(proc.stdout))
    assert kinds == ["action-matches-nothing", "ineffective-cross-account-action"]


def test_bad_key_arn_and_unknown_command_are_usage_errors(tmp_path: Path) -> None:
    key_policy, _ = _seed_003_files(tmp_path)
    assert kmsaudit("evaluate", "--key-policy", key_policy, "--key-arn", "arn:aws:s3:::bucket").returncode == 2
    assert kmsaudit("frobnicate").returncode == 2
