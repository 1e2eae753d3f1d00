"""Issue #25 item 8, the smaller ones: `evaluate --lints` says when there are none; `--version`
and a config mistake answer without importing the AWS SDK (they took 1-4 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import KEY_ARN

from kmsaudit.cli.main import main


def test_lints_says_no_lints_when_there_are_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.json"
    root = "arn:aws:iam::111122223333:root"
    stmt = {"Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"}
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [stmt]}))
    assert main(["evaluate", "--key-policy", str(policy), "--key-arn", KEY_ARN, "--lints"]) == 0
    assert capsys.readouterr().out == "No lints.\n"
    assert main(["evaluate", "--key-policy", str(policy), "--key-arn", KEY_ARN, "--lints", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_an_oversized_policy_file_gets_the_too_large_lint_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue #25 item 8: the scan lints a key policy over KMS's 32,768 bytes; `evaluate` did not.
    root = "arn:aws:iam::111122223333:root"
    stmts = [
        {"Sid": f"S{i:04d}", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"}
        for i in range(450)
    ]
    policy = tmp_path / "big.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": stmts}))
    assert policy.stat().st_size > 32768
    assert main(["evaluate", "--key-policy", str(policy), "--key-arn", KEY_ARN, "--lints", "--format", "json"]) == 0
    assert "key-policy-too-large" in {lint["kind"] for lint in json.loads(capsys.readouterr().out)}


SDK = "[m for m in sys.modules if m.split('.')[0] in ('botocore', 'aiobotocore', 'aiohttp', 'boto3')]"


@pytest.mark.parametrize(
    ("args", "config"),
    [
        (["--version"], ""),
        (["scan", "--config", "{config}"], '[scan]\nregions = ["us-east-1"]\nbogus = 1\n'),
        (["scan", "--config", "{config}"], '[[accounts]]\nid = "111122223333"\n[scan]\nregions = ["us-east-9"]\n'),
    ],
    ids=["version", "unknown-key", "unknown-region"],
)
def test_version_and_a_config_mistake_import_no_aws_sdk(tmp_path: Path, args: list[str], config: str) -> None:
    path = tmp_path / "k.toml"
    path.write_text(config)
    argv = [a.format(config=path) for a in args]
    code = (
        "import sys\nfrom kmsaudit.cli.main import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"print('SDK', {SDK}, code, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr.splitlines()[-1] == f"SDK [] {0 if args == ['--version'] else 2}", done.stderr
