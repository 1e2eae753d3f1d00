"""Issue #13.2: credentials that belong to another account never file data under the configured
one. `sts:GetCallerIdentity` through each account's credentials must name that account."""

from __future__ import annotations

import json
from pathlib import Path

from estate import Estate
from test_scan_cli import scan

from kmsaudit.demo.emulator import client, create_key
from kmsaudit.store.database import Store

AMBIENT = "123456789012"  # moto's account for the ambient test credentials
CONFIGURED = "333333333333"


def test_ambient_credentials_of_another_account_fail_that_accounts_scopes(tmp_path: Path, aws: str) -> None:
    create_key(AMBIENT, "us-east-1")  # a key the wrong credentials would read
    client("kms", None).create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    config = tmp_path / "k.toml"
    config.write_text(f'[scan]\nregions = ["us-east-1"]\n\n[[accounts]]\nid = "{CONFIGURED}"\n')
    proc = scan(config, "--format", "json", endpoint=aws)
    assert proc.returncode == 4, proc.stderr  # the scan finished; this account's scopes failed
    assert json.loads(proc.stdout) == []
    assert f"scope {CONFIGURED}/us-east-1 failed" in proc.stderr
    assert f"credentials of account {AMBIENT}" in proc.stderr and "wrong-account" in proc.stderr
    store = Store(tmp_path / "kmsaudit.db", create=False)
    try:
        rows = store.db.execute("SELECT account, ok, error_code FROM scopes").fetchall()
    finally:
        store.close()
    assert rows == [(CONFIGURED, 0, "wrong-account")]  # nothing stored as if it were the account's


def test_an_assumed_role_in_the_configured_account_passes(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(
        '[scan]\nregions = ["us-east-1"]\n\n[[accounts]]\nid = "111111111111"\n'
        'role_arn = "arn:aws:iam::111111111111:role/KmsAuditReadOnly"\n'
    )
    proc = scan(config, "--format", "json", endpoint=aws)
    assert proc.returncode == 0, proc.stderr
    assert {f["key_account"] for f in json.loads(proc.stdout)} == {"111111111111"}
