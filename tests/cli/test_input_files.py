"""Issue #25 (SPEC §6 `evaluate`): every input file is checked at the edge by its shape; a wrong
file is one line naming it and what it looks like instead, exit 2, never an all-clear."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import KEY_ARN, ROOT_B, A, B, C

from kmsaudit.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
OTHER_KEY = f"arn:aws:kms:us-west-2:{A}:key/ffffffff-0000-1111-2222-333333333333"
POLICY = json.loads((EXAMPLES / "key-policy.json").read_text())
GRANTS = json.loads((EXAMPLES / "grants.json").read_text())
DETAILS = json.loads((EXAMPLES / "iam-444455556666.json").read_text())
ACCOUNTS = {
    "Accounts": [{"Id": A, "Arn": f"arn:aws:organizations::{A}:account/o-abc123/{A}", "Name": "a", "Status": "ACTIVE"}]
}

# Each kind of JSON file a user may have lying around, by what it is.
KINDS: dict[str, Any] = {
    "key-policy": POLICY,
    "get-key-policy": {"Policy": json.dumps(POLICY), "PolicyName": "default"},
    "describe-key": {"KeyMetadata": {"KeyId": "1234abcd", "Arn": KEY_ARN, "KeyState": "Enabled"}},
    "list-key-policies": {"PolicyNames": ["default"], "Truncated": False},
    "list-grants": GRANTS,
    "authorization-details": DETAILS,
    "list-accounts": ACCOUNTS,
    "empty-object": {},
    "empty-list": [],
    "null": None,
    "string": "a string",
    "number": 42,
    "statement-string": {"Statement": "x"},
    "findings": [{"key_arn": KEY_ARN, "principal": ROOT_B, "access": "potential"}],
    "sarif": {"version": "2.1.0", "runs": []},
}
TEXTS = {
    "not-json": "<html>not json</html>",
    "empty-file": "",
    "binary": b"\xff\xfe\x00".decode("latin-1"),
    "deep": "[" * 5000 + "]" * 5000,
}


def _write(tmp: Path, name: str, data: Any) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmsaudit", "evaluate", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("kind", "looks"),
    [
        ("empty-object", "an empty JSON object"),
        ("describe-key", "`aws kms describe-key` output"),
        ("list-key-policies", "`aws kms list-key-policies` output"),
        ("list-grants", "`aws kms list-grants` output"),
        ("authorization-details", "`aws iam get-account-authorization-details` output"),
        ("list-accounts", "`aws organizations list-accounts` output"),
        ("findings", "kmsaudit findings (JSON)"),
    ],
)
def test_a_wrong_key_policy_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, looks: str
) -> None:
    """Issue #25 item 1: `{}`, describe-key output, … were "No cross-account access found.", exit 0."""
    path = _write(tmp_path, kind, KINDS[kind])
    code, out, err = _run(capsys, "--key-policy", path, "--key-arn", KEY_ARN, "--fail-on", "low")
    assert code == 2 and out == ""
    assert (
        err == f"kmsaudit: error: --key-policy {path}: this is {looks}, "
        "not a key policy (nor `aws kms get-key-policy` output)\n"
    )


def test_a_policy_whose_statement_is_not_statements_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "p", {"Statement": "x"})
    code, _, err = _run(capsys, "--key-policy", path, "--key-arn", KEY_ARN)
    assert code == 2 and "Statement" in err and err.count("\n") == 1
    inner = _write(tmp_path, "gkp", {"Policy": "{}", "PolicyName": "default"})
    code, _, err = _run(capsys, "--key-policy", inner, "--key-arn", KEY_ARN)
    assert code == 2 and "its Policy is an empty JSON object, not a key policy" in err


def test_the_right_kinds_still_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _write(tmp_path, "p", KINDS["get-key-policy"])
    grants = _write(tmp_path, "g", GRANTS["Grants"])  # `--query Grants`: the bare list
    iam, org = _write(tmp_path, "i", DETAILS), _write(tmp_path, "o", ACCOUNTS)
    code, out, err = _run(
        capsys,
        "--key-policy",
        policy,
        "--key-arn",
        KEY_ARN,
        "--grants",
        grants,
        "--iam",
        f"{B}={iam}",
        "--org",
        org,
        "--format",
        "json",
    )
    assert code == 0, err
    assert {f["via"][0] for f in json.loads(out)} >= {"grant", "key-policy"}


@pytest.mark.parametrize("kind", ["key-policy", "describe-key", "empty-object", "authorization-details"])
def test_a_wrong_grants_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    policy, grants = _write(tmp_path, "p", POLICY), _write(tmp_path, kind, KINDS[kind])
    code, _, err = _run(capsys, "--key-policy", policy, "--key-arn", KEY_ARN, "--grants", grants)
    assert code == 2 and f"--grants {grants}: this is " in err and "not `aws kms list-grants` output" in err


def test_a_grant_without_its_grantee_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = {"Grants": [{"GrantId": "g1", "KeyId": KEY_ARN, "Operations": ["Decrypt"]}]}
    policy, grants = _write(tmp_path, "p", POLICY), _write(tmp_path, "g", broken)
    code, _, err = _run(capsys, "--key-policy", policy, "--key-arn", KEY_ARN, "--grants", grants)
    assert code == 2 and "Grants[0].GranteePrincipal: Field required" in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["key-policy", "list-grants", "empty-object", "describe-key"])
def test_a_wrong_iam_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """Issue #25 item 2: the key policy given as IAM details made B audited, so trusted (high -> low)."""
    policy, iam = _write(tmp_path, "p", POLICY), _write(tmp_path, kind, KINDS[kind])
    code, _, err = _run(capsys, "--key-policy", policy, "--key-arn", KEY_ARN, "--iam", f"{B}={iam}")
    assert code == 2 and f"--iam {iam}: this is " in err
    assert "not `aws iam get-account-authorization-details` output" in err and err.count("\n") == 1


def test_iam_details_of_another_account_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #25 item 2: details whose ARNs are all in B, given for C, were taken for C."""
    policy, iam = _write(tmp_path, "p", POLICY), _write(tmp_path, "i", DETAILS)
    code, _, err = _run(capsys, "--key-policy", policy, "--key-arn", KEY_ARN, "--iam", f"{C}={iam}")
    assert code == 2
    assert err == f"kmsaudit: error: --iam {C}={iam}: these are the details of account {B}, not {C}\n"


def test_grants_of_another_key_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #25 item 3: grants for key A were applied to --key-arn B."""
    policy, grants = _write(tmp_path, "p", POLICY), _write(tmp_path, "g", GRANTS)
    code, _, err = _run(capsys, "--key-policy", policy, "--key-arn", OTHER_KEY, "--grants", grants)
    assert code == 2
    assert (
        err == f"kmsaudit: error: --grants {grants}: these are the grants of {KEY_ARN}, not of --key-arn {OTHER_KEY}\n"
    )


def test_the_key_arn_is_taken_from_the_grants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #25 item 3: without --key-arn the ARN was invented (us-east-1, zeros) though the grants name it."""
    policy, grants = _write(tmp_path, "p", POLICY), _write(tmp_path, "g", GRANTS)
    code, out, err = _run(capsys, "--key-policy", policy, "--grants", grants, "--format", "json")
    assert code == 0
    assert {f["key_arn"] for f in json.loads(out)} == {KEY_ARN} and {f["region"] for f in json.loads(out)} == {
        "us-west-2"
    }
    assert f"taken from the grants ({KEY_ARN})" in err
    two = {"Grants": [*GRANTS["Grants"], {**GRANTS["Grants"][0], "GrantId": "g2", "KeyId": OTHER_KEY}]}
    code, _, err = _run(capsys, "--key-policy", policy, "--grants", _write(tmp_path, "two", two))
    assert code == 2 and "grants of 2 keys" in err


FLAGS = ("--key-policy", "--grants", "--iam", "--org")


@pytest.mark.parametrize("flag", FLAGS)
def test_fuzz_every_kind_of_file_to_every_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    """Issue #25 acceptance: each kind of input file given to each file flag: exit 0, 2 or 3, one
    line on error, never an exception (in a process: a traceback)."""
    files = {name: _write(tmp_path, name, data) for name, data in KINDS.items()}
    for name, text in TEXTS.items():
        (tmp_path / name).write_text(text, encoding="latin-1")
        files[name] = str(tmp_path / name)
    files["directory"], files["missing"] = str(tmp_path), str(tmp_path / "missing.json")
    policy = _write(tmp_path, "good-policy", POLICY)
    for name, path in files.items():
        value = f"{B}={path}" if flag == "--iam" else path
        args = [flag, value] if flag == "--key-policy" else ["--key-policy", policy, flag, value]
        code, out, err = _run(capsys, *args, "--format", "json")
        assert code in (0, 2, 3), (flag, name, code, err)
        if code == 2:
            assert out == "" and err.count("\n") == 1 and err.startswith("kmsaudit: error: "), (flag, name, err)


def test_in_a_process_a_wrong_file_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "describe", KINDS["describe-key"])
    proc = _cli("--key-policy", path, "--fail-on", "low")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""
    assert "this is `aws kms describe-key` output, not a key policy" in proc.stderr
