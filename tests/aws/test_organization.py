"""[organization]: member accounts discovered, SCPs applied (SPEC §2.9), org conditions decided (§2.7)."""

from __future__ import annotations

from pathlib import Path

import boto3

from kmsaudit.config.settings import load_config
from kmsaudit.demo.emulator import client, create_key, create_role, document, key_policy
from kmsaudit.run.scan import run_scan

MANAGEMENT = "123456789012"  # moto's account for the ambient credentials


async def test_organization_accounts_scps_and_perimeter(tmp_path: Path, aws: str) -> None:
    orgs = boto3.client("organizations", region_name="us-east-1")
    org_id = orgs.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    root = orgs.list_roots()["Roots"][0]["Id"]
    owner = orgs.create_account(AccountName="keys", Email="keys@example.com")["CreateAccountStatus"]["AccountId"]
    user = orgs.create_account(AccountName="app", Email="app@example.com")["CreateAccountStatus"]["AccountId"]
    prod = orgs.create_organizational_unit(ParentId=root, Name="Prod")["OrganizationalUnit"]["Id"]
    orgs.move_account(AccountId=user, SourceParentId=root, DestinationParentId=prod)
    scp = orgs.create_policy(
        Name="NoDecrypt",
        Description="d",
        Type="SERVICE_CONTROL_POLICY",
        Content=document({"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}),
    )
    orgs.attach_policy(PolicyId=scp["Policy"]["PolicySummary"]["Id"], TargetId=prod)

    key = create_key(
        owner,
        "us-east-1",
        key_policy(
            owner,
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{user}:root"},
                "Action": ["kms:Decrypt", "kms:Encrypt"],
                "Resource": "*",
            },
            {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
            {
                "Sid": "Perimeter",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["kms:Decrypt", "kms:Encrypt"],
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": org_id}},
            },
        ),
    )
    iam = client("iam", user)
    create_role(iam, "App", {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}, policy_name="kms")

    path = tmp_path / "org.toml"
    path.write_text('[scan]\nregions = ["us-east-1"]\n[organization]\nrole_name = "KmsAuditReadOnly"\n')
    result = await run_scan(load_config(path))

    assert {s.account for s in result.scopes} == {MANAGEMENT, owner, user}  # discovered, none configured
    assert not result.failed_scopes
    found = {(f.principal, f.access): f for f in result.findings if f.key_arn == key["Arn"]}
    app = found[(f"arn:aws:iam::{user}:role/App", "effective")]
    assert app.actions == ("kms:Encrypt",)  # the OU's SCP denies Decrypt (SPEC §2.9)
    assert app.zone == "trusted" and not app.conditional  # the organization is the zone of trust
    # The perimeter Deny is decided for a known organization: "*" is not public (SPEC §2.7).
    assert ("*", "public") not in found and ("*", "potential") not in found
    potential = found[(f"arn:aws:iam::{user}:root", "potential")]
    assert set(potential.actions) == {"kms:Decrypt", "kms:Encrypt"} and not potential.conditional


async def test_organization_discovery_reads_accounts_concurrently(tmp_path: Path, aws: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue #19.14: discovery read each account's parents and policies one account after the
    other (~3 calls each): minutes before the first KMS request in a 1,000-account organization."""
    from awsproxy import AwsProxy

    orgs = boto3.client("organizations", region_name="us-east-1")
    orgs.create_organization(FeatureSet="ALL")
    for i in range(6):
        orgs.create_account(AccountName=f"a{i}", Email=f"a{i}@example.com")
    proxy = AwsProxy(aws, latency=0.1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    try:
        path = tmp_path / "org.toml"
        path.write_text('[scan]\nregions = ["us-east-1"]\n[organization]\nrole_name = "KmsAuditReadOnly"\n')
        result = await run_scan(load_config(path))
    finally:
        proxy.stop()
    assert len({s.account for s in result.scopes}) == 7 and not result.failed_scopes
    assert proxy.max_in_flight["ListParents"] > 1
    assert proxy.max_in_flight["ListPoliciesForTarget"] > 1
