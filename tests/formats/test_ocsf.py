"""Issue #16: findings and drift as OCSF Detection Findings (class 2004), validated by the
schema's own models (py-ocsf-models, OCSF 1.5.0); a view of SPEC §4 and §5, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import KEY_ARN, ROLE_B, B
from py_ocsf_models import OCSF_VERSION
from py_ocsf_models.events.findings.detection_finding import DetectionFinding

from kmsaudit.formats.ocsf import drift_to_ocsf, finding_to_ocsf
from kmsaudit.model import Finding


def finding(**overrides: Any) -> Finding:
    base: dict[str, Any] = dict(
        key_arn=KEY_ARN,
        key_account="111122223333",
        region="us-west-2",
        principal=ROLE_B,
        principal_account=B,
        access="effective",
        zone="external",
        via=("iam-policy", "key-policy"),
        actions=("kms:Decrypt", "kms:DescribeKey"),
        conditional=False,
        conditions=(),
        severity="high",
    )
    base.update(overrides)
    return Finding(**base)


def valid(obj: dict[str, Any]) -> DetectionFinding:
    """The object as a consumer reads it: the schema's own model accepts it, and it is 2004."""
    model = DetectionFinding.model_validate(obj)
    assert obj["class_uid"] == 2004 and obj["category_uid"] == 2 and obj["metadata"]["version"] == OCSF_VERSION
    return model


def test_a_finding_is_a_detection_finding_with_the_key_as_resource_and_every_field_kept() -> None:
    f = finding()
    obj = finding_to_ocsf(f, seen_at=1_790_000_000.5, names={"aliases": ["alias/exports"], "manager": "CUSTOMER"})
    valid(obj)
    assert obj["type_uid"] == 200401 and obj["activity_id"] == 1
    assert (obj["severity_id"], obj["severity"]) == (4, "High")
    assert (obj["status_id"], obj["status"]) == (1, "New")
    assert obj["time"] == 1_790_000_000_500  # OCSF times are epoch milliseconds
    assert obj["finding_info"]["uid"] == f.id
    [resource] = obj["resources"]
    assert resource["uid"] == KEY_ARN and resource["type"] == "AWS::KMS::Key"
    assert resource["region"] == "us-west-2" and resource["name"] == "alias/exports"
    assert resource["labels"] == ["alias/exports"] and resource["cloud_partition"] == "aws"
    assert obj["cloud"]["provider"] == "AWS" and obj["cloud"]["account"]["uid"] == "111122223333"
    assert obj["unmapped"]["kmsaudit"] == f.to_dict()  # principal, access, via, actions, conditions…
    assert ROLE_B in obj["message"] and "kms:Decrypt" in obj["message"]


@pytest.mark.parametrize(("severity", "severity_id"), [("critical", 5), ("high", 4), ("medium", 3), ("low", 2)])
def test_severities_map_to_ocsf_severity_ids(severity: str, severity_id: int) -> None:
    assert finding_to_ocsf(finding(severity=severity))["severity_id"] == severity_id


def test_an_accepted_finding_is_suppressed() -> None:
    obj = finding_to_ocsf(finding(accepted=True, accepted_by="partner-decrypt"))
    valid(obj)
    assert (obj["status_id"], obj["status"]) == (3, "Suppressed")
    assert obj["unmapped"]["kmsaudit"]["accepted_by"] == "partner-decrypt"


@pytest.mark.parametrize(
    ("kind", "activity", "status"),
    [("added", 1, 1), ("widened", 2, 1), ("policy-changed", 2, 1), ("removed", 3, 4), ("key-deleted", 3, 4)],
)
def test_drift_events_create_update_or_close(kind: str, activity: int, status: int) -> None:
    f = finding().to_dict()
    event = {
        "id": "e1",
        "kind": kind,
        "key_arn": KEY_ARN,
        "principal": ROLE_B,
        "account": "111122223333",
        "region": "us-west-2",
        "before": f if kind != "added" else None,
        "after": f if kind != "removed" else None,
        "severity": "high",
        "snapshot_id": 7,
        "detected_at": 1_790_000_000.0,
    }
    obj = drift_to_ocsf(event)
    valid(obj)
    assert (obj["activity_id"], obj["status_id"], obj["type_uid"]) == (activity, status, 200400 + activity)
    # Issue #24, defect 9: the finding's uid, as `findings --format ocsf` gave it, so a SIEM
    # updates and closes what it received; the drift event's own id beside it.
    assert obj["finding_info"]["uid"] == f["id"] == finding_to_ocsf(finding())["finding_info"]["uid"]
    assert obj["unmapped"]["kmsaudit"]["id"] == "e1" and obj["resources"][0]["uid"] == KEY_ARN
    assert obj["unmapped"]["kmsaudit"] == event


def test_a_failed_scope_event_has_no_key_resource_and_still_validates() -> None:
    obj = drift_to_ocsf(
        {
            "id": "e2",
            "kind": "scope-failed",
            "key_arn": "",
            "principal": "",
            "account": "111122223333",
            "region": "eu-west-1",
            "before": None,
            "after": {"error": "AccessDenied"},
            "severity": "high",
            "snapshot_id": 3,
            "detected_at": 1_790_000_000.0,
        }
    )
    valid(obj)
    assert "resources" not in obj and obj["cloud"]["region"] == "eu-west-1"


def test_evaluate_prints_ocsf_and_ocsf_jsonl(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
                        "Action": "kms:Decrypt",
                        "Resource": "*",
                    }
                ],
            }
        )
    )
    run = [sys.executable, "-m", "kmsaudit", "evaluate", "--key-policy", str(policy), "--key-arn", KEY_ARN]
    array = subprocess.run([*run, "--format", "ocsf"], capture_output=True, text=True, timeout=60)
    assert array.returncode == 0, array.stderr
    [obj] = json.loads(array.stdout)
    valid(obj)
    assert obj["unmapped"]["kmsaudit"]["principal"] == f"arn:aws:iam::{B}:root"
    lines = subprocess.run([*run, "--format", "ocsf-jsonl"], capture_output=True, text=True, timeout=60)
    [line] = [json.loads(text) for text in lines.stdout.splitlines()]
    valid(line)
    assert line["finding_info"]["uid"] == obj["finding_info"]["uid"] and line["unmapped"] == obj["unmapped"]
    lints = subprocess.run([*run, "--format", "ocsf", "--lints"], capture_output=True, text=True, timeout=60)
    assert lints.returncode == 2 and "use --format json" in lints.stderr and "Traceback" not in lints.stderr
