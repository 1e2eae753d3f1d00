"""Findings and drift events as OCSF Detection Findings (class 2004), for a SIEM (README
"Integrations"). Built with py-ocsf-models, the library Prowler maintains, so each object is
validated by the schema's own models as it is made. A view of SPEC §4 and §5: every kmsaudit
field is kept whole in `unmapped`.

    finding                     -> activity Create, status New (Suppressed when accepted)
    drift added / widened / …   -> activity Create or Update, status New
    drift removed / key-deleted -> activity Close, status Resolved
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping, Sequence
from typing import Any

from py_ocsf_models import OCSF_VERSION
from py_ocsf_models.events.findings.activity_id import ActivityID
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from py_ocsf_models.events.findings.detection_finding_type_id import DetectionFindingTypeID
from py_ocsf_models.events.findings.severity_id import SeverityID
from py_ocsf_models.events.findings.status_id import StatusID
from py_ocsf_models.objects.account import Account, TypeID
from py_ocsf_models.objects.cloud import Cloud
from py_ocsf_models.objects.finding_info import FindingInformation
from py_ocsf_models.objects.metadata import Metadata
from py_ocsf_models.objects.product import Product
from py_ocsf_models.objects.remediation import Remediation
from py_ocsf_models.objects.resource_details import ResourceDetails

from kmsaudit import __version__
from kmsaudit.model import Finding

__all__ = ["OCSF_VERSION", "drift_to_ocsf", "finding_to_ocsf"]

_SEVERITY = {
    "critical": SeverityID.Critical,
    "high": SeverityID.High,
    "medium": SeverityID.Medium,
    "low": SeverityID.Low,
}
_CLOSING = {"removed", "key-deleted"}
_UPDATING = {"widened", "narrowed", "policy-changed", "key-readable"}
_ACCESS_TITLE = {
    "public": "Anyone can use a KMS key",
    "effective": "A principal outside the account can use a KMS key",
    "potential": "A KMS key's policy lets a principal outside the account use it",
}
_PRODUCT = Product(name="kmsaudit", vendor_name="kmsaudit", version=__version__)


def _metadata(event_code: str) -> Metadata:
    return Metadata(product=_PRODUCT, version=OCSF_VERSION, event_code=event_code, profiles=["cloud"])


def _partition(arn: str) -> str:
    parts = arn.split(":", 2)
    return parts[1] if len(parts) == 3 else "aws"


def _key_resource(key_arn: str, account: str, region: str, names: Mapping[str, Any] | None) -> ResourceDetails:
    aliases = list((names or {}).get("aliases") or ())
    data: dict[str, object] = {"aliases": aliases}
    if names and names.get("manager"):
        data["key_manager"] = names["manager"]
    return ResourceDetails(
        uid=key_arn,
        name=aliases[0] if aliases else key_arn.rsplit("/", 1)[-1],
        type="AWS::KMS::Key",
        region=region or None,
        cloud_partition=_partition(key_arn),
        labels=aliases or None,
        data=data,
    )


def _cloud(account: str, region: str) -> Cloud:
    return Cloud(
        provider="AWS",
        region=region or None,
        account=Account(name=account, uid=account, type_id=TypeID.AWS_Account, type="AWS Account"),
    )


def _dump(event: DetectionFinding) -> dict[str, Any]:
    dumped: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    return dumped


def _remediation(remediation: Sequence[Mapping[str, Any]]) -> Remediation | None:
    """OCSF `remediation`: the verified changes, the first (the smallest) first."""
    if not remediation:
        return None
    lines = [
        f"{i}. {r.get('summary')}"
        + ("" if r.get("verified") else " (not verified)")
        + (f": {r['command']}" if r.get("command") else "")
        for i, r in enumerate(remediation, 1)
    ]
    return Remediation(desc="\n".join(lines))


def finding_to_ocsf(
    finding: Finding,
    seen_at: float | None = None,
    names: Mapping[str, Any] | None = None,
    explained: tuple[list[Any], list[Any]] | None = None,
) -> dict[str, Any]:
    """One finding (SPEC §4) as an OCSF Detection Finding. `seen_at`: the snapshot's time (epoch
    seconds; default now); `names`: the key's aliases and manager, when known; `explained`: its
    explanation and remediation (`evaluate --explain`), kept in `unmapped` and as `remediation`."""
    when = int((seen_at if seen_at is not None else _time.time()) * 1000)
    status = StatusID.Suppressed if finding.accepted else StatusID.New
    if finding.kind == "access":
        title = _ACCESS_TITLE.get(finding.access, "Cross-account access to a KMS key")
        desc = (
            f"{finding.principal} ({finding.zone}, {finding.access} access via {'+'.join(finding.via)}) can use "
            f"{finding.key_arn}: {', '.join(finding.actions) or 'no action'}"
            + (" when its conditions hold" if finding.conditional else "")
        )
    else:
        title, desc = "A KMS key's policy cannot be read as IAM would", f"{finding.key_arn}: unparseable policy"
    event = DetectionFinding(
        metadata=_metadata(f"kmsaudit-{finding.kind}-{finding.access}"),
        activity_id=ActivityID.Create,
        activity_name=ActivityID.Create.name,
        type_uid=DetectionFindingTypeID.Create,
        type_name="Detection Finding: Create",
        severity_id=_SEVERITY.get(finding.severity, SeverityID.Unknown),
        severity=finding.severity.capitalize(),
        status_id=status,
        status=status.name,
        time=when,
        finding_info=FindingInformation(
            uid=finding.id,
            title=title,
            desc=desc,
            types=[f"kmsaudit/{finding.kind}/{finding.access}", f"kmsaudit/zone/{finding.zone}"],
            last_seen_time=when,
        ),
        message=desc,
        cloud=_cloud(finding.key_account, finding.region),
        resources=[_key_resource(finding.key_arn, finding.key_account, finding.region, names)],
        remediation=_remediation(explained[1]) if explained else None,
        unmapped={
            "kmsaudit": finding.to_dict()
            | ({"explanation": explained[0], "remediation": explained[1]} if explained else {})
        },
    )
    return _dump(event)


def _finding_uid(event: Mapping[str, Any]) -> str:
    """The uid of the finding a drift event updates or closes: the one `findings --format ocsf`
    gave it (`finding_info.uid` = the finding's id), so a SIEM can close what it received (issue
    #24, defect 9). An event about no one finding (a key deleted, a scope failed, a policy
    changed) keeps its own id; the drift event's id is `unmapped.kmsaudit.id` always."""
    for side in ("after", "before"):
        finding = event.get(side)
        if isinstance(finding, Mapping) and finding.get("id"):
            return str(finding["id"])
    return str(event.get("id"))


def drift_to_ocsf(event: Mapping[str, Any], names: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One drift event (SPEC §5) as an OCSF Detection Finding: `removed` and `key-deleted` close
    (status Resolved), `widened`, `narrowed`, `policy-changed` and `key-readable` update, the
    rest create."""
    kind = str(event.get("kind"))
    if kind in _CLOSING:
        activity, type_uid, status = ActivityID.Close, DetectionFindingTypeID.Close, StatusID.Resolved
    elif kind in _UPDATING:
        activity, type_uid, status = ActivityID.Update, DetectionFindingTypeID.Update, StatusID.New
    else:
        activity, type_uid, status = ActivityID.Create, DetectionFindingTypeID.Create, StatusID.New
    when = int(float(event.get("detected_at") or _time.time()) * 1000)
    key_arn, principal = str(event.get("key_arn") or ""), str(event.get("principal") or "")
    account, region = str(event.get("account") or ""), str(event.get("region") or "")
    where = key_arn or f"{account}/{region}"
    title = f"KMS access drift: {kind}" + (f" for {principal}" if principal else "")
    severity = str(event.get("severity") or "")
    ocsf = DetectionFinding(
        metadata=_metadata(f"kmsaudit-drift-{kind}"),
        activity_id=activity,
        activity_name=activity.name,
        type_uid=type_uid,
        type_name=f"Detection Finding: {activity.name}",
        severity_id=_SEVERITY.get(severity, SeverityID.Unknown),
        severity=severity.capitalize() or None,
        status_id=status,
        status=status.name,
        time=when,
        finding_info=FindingInformation(
            uid=_finding_uid(event),
            title=title,
            desc=f"{title} on {where}",
            types=[f"kmsaudit/drift/{kind}"],
        ),
        message=f"{title} on {where}",
        cloud=_cloud(account, region) if account else None,
        resources=[_key_resource(key_arn, account, region, names)] if key_arn else None,
        unmapped={"kmsaudit": dict(event)},
    )
    return _dump(ocsf)
