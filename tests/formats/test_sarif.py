"""Issue #16: `kmsaudit evaluate --format sarif` — SARIF 2.1.0 for code scanning: one result per
finding and per lint, the policy file as the artifact and the statement's line as the region."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import KEY_ARN, ROLE_B, B

EVALUATE = [sys.executable, "-m", "kmsaudit", "evaluate"]
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "data" / "sarif-2.1.0-kmsaudit.schema.json").read_text())
ENABLE = {
    "Sid": "Enable IAM policies",
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
    "Action": "kms:*",
    "Resource": "*",
}
PARTNER = {
    "Sid": "Partner decrypts",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
    "Action": ["kms:Decrypt", "kms:DescribeKey"],
    "Resource": "*",
}
PUBLIC_VIA_S3 = {
    "Sid": "Anyone through S3",
    "Effect": "Allow",
    "Principal": "*",
    "Action": "kms:Decrypt",
    "Resource": "*",
    "Condition": {"StringEquals": {"kms:ViaService": "s3.us-west-2.amazonaws.com"}},
}
GROUP = {  # an IAM group is not a principal: a lint
    "Sid": "Group",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{B}:group/Admins"},
    "Action": "kms:Decrypt",
    "Resource": "*",
}


def sarif(tmp_path: Path, *extra: str, policy: Any = None, text: str | None = None) -> tuple[dict[str, Any], str]:
    path = tmp_path / "policies" / "key.json"
    path.parent.mkdir(exist_ok=True)
    doc = policy or {"Version": "2012-10-17", "Statement": [ENABLE, PARTNER, PUBLIC_VIA_S3, GROUP]}
    path.write_text(text if text is not None else json.dumps(doc, indent=2))
    proc = subprocess.run(
        [*EVALUATE, "--key-policy", "policies/key.json", "--key-arn", KEY_ARN, "--format", "sarif", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode in (0, 3), proc.stderr
    log = json.loads(proc.stdout)
    jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(log)
    return log, path.read_text()


def line_of(text: str, needle: str) -> int:
    """The line of the statement whose `Sid` is `needle` (its opening brace)."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if f'"Sid": "{needle}"' in line)
    while lines[at].strip() != "{":
        at -= 1
    return at + 1


def test_one_result_per_finding_and_lint_at_its_statement_line(tmp_path: Path) -> None:
    log, text = sarif(tmp_path)
    [run] = log["runs"]
    results = run["results"]
    rules = run["tool"]["driver"]["rules"]
    by_rule = {r["ruleId"]: r for r in results}
    partner = by_rule["access/potential"]
    assert partner["properties"]["kmsaudit"]["principal"] == f"arn:aws:iam::{B}:root"
    assert partner["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "policies/key.json"
    assert partner["locations"][0]["physicalLocation"]["region"]["startLine"] == line_of(text, "Partner decrypts")
    public = by_rule["access/public"]
    assert public["locations"][0]["physicalLocation"]["region"]["startLine"] == line_of(text, "Anyone through S3")
    assert public["level"] == "error" and partner["level"] in ("error", "warning")
    lint = by_rule["lint/invalid-principal"]
    assert lint["locations"][0]["physicalLocation"]["region"]["startLine"] == line_of(text, "Group")
    # every result names a rule of the driver, by id and index; fingerprints are the finding ids
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    assert partner["partialFingerprints"]["kmsauditFindingId/v1"] == partner["properties"]["kmsaudit"]["id"]


def test_fail_on_gates_ci_and_lints_alone(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"Version": "2012-10-17", "Statement": [ENABLE, PUBLIC_VIA_S3]}))
    run = [sys.executable, "-m", "kmsaudit", "evaluate", "--key-policy", str(path), "--key-arn", KEY_ARN]
    gated = subprocess.run([*run, "--format", "sarif", "--fail-on", "high"], capture_output=True, text=True)
    assert gated.returncode == 3 and json.loads(gated.stdout)["runs"][0]["results"]
    lints_only, _ = sarif(tmp_path, "--lints")
    assert {r["ruleId"] for r in lints_only["runs"][0]["results"]} == {"lint/invalid-principal"}


def test_the_get_key_policy_shape_points_at_the_policy_line(tmp_path: Path) -> None:
    inner = json.dumps({"Version": "2012-10-17", "Statement": [ENABLE, PARTNER]})
    text = '{\n  "PolicyName": "default",\n  "Policy": ' + json.dumps(inner) + "\n}\n"
    log, _ = sarif(tmp_path, text=text)
    [result] = log["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == 3


def test_access_through_a_grant_points_at_the_grant(tmp_path: Path) -> None:
    grants = tmp_path / "grants.json"
    grants.write_text(
        json.dumps(
            {
                "Grants": [
                    {
                        "GrantId": "g1",
                        "GranteePrincipal": "arn:aws:iam::111122223333:role/Local",
                        "Operations": ["Decrypt"],
                    },
                    {"GrantId": "g2", "GranteePrincipal": ROLE_B, "Operations": ["Decrypt"]},
                ]
            },
            indent=2,
        )
    )
    log, _ = sarif(tmp_path, "--grants", str(grants), policy={"Version": "2012-10-17", "Statement": [ENABLE]})
    [result] = [r for r in log["runs"][0]["results"] if r["properties"]["kmsaudit"]["principal"] == ROLE_B]
    where = result["locations"][0]["physicalLocation"]
    grant_line = next(i for i, line in enumerate(grants.read_text().splitlines(), 1) if ROLE_B in line)
    assert where["artifactLocation"]["uri"] == "grants.json" and where["region"]["startLine"] == grant_line


@pytest.mark.parametrize("broken", ["{}", '{"Statement": "nope"}'])
def test_a_policy_without_statements_fails_the_gate(tmp_path: Path, broken: str) -> None:
    """Issue #25 item 1: `{}` is not a key policy; a CI gate on it fails (exit 2, one line), never passes."""
    path = tmp_path / "key.json"
    path.write_text(broken)
    proc = subprocess.run(
        [*EVALUATE, "--key-policy", str(path), "--key-arn", KEY_ARN, "--format", "sarif", "--fail-on", "high"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
