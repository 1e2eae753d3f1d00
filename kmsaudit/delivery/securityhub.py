"""Findings to AWS Security Hub as ASFF (README "Integrations"), through the durable outbox.

Each scan queues, per `[[export]]`, what Security Hub must learn (Store.queue_export): new and
changed findings, unchanged ones once a day (Security Hub forgets a finding 90 days after its
last update), and once `ARCHIVED` a finding that is gone. Delivery sends them in batches of 100
with BatchImportFindings through the same paced, retrying call wrapper as the scan; what fails
waits in the outbox for its backoff, and a newer state of a finding replaces one still waiting,
so an outage or a crash loses nothing and sends nothing twice.

The default product of the sending account is used, and Security Hub requires a finding's
`AwsAccountId` to be that account: every finding goes to the Security Hub of the account whose
credentials send it (`role_arn`, else the ambient credentials), the key's own account in the
resource and in `ProductFields`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from kmsaudit.collect.api import Api
from kmsaudit.collect.session import Sessions
from kmsaudit.config.settings import ExportSettings, ScanSettings
from kmsaudit.delivery.alerts import backoff
from kmsaudit.delivery.why import explain_findings
from kmsaudit.errors import CollectError
from kmsaudit.store.database import Store

log = structlog.get_logger("kmsaudit.export")

BATCH = 100  # BatchImportFindings takes at most 100 findings
DUE_PER_ROUND = 10_000
_SEVERITY = {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW"}
TYPES = [
    "Software and Configuration Checks/AWS Security Best Practices/KMS key cross-account access",
    "Effects/Data Exposure",
]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _recommendation(f: dict[str, Any], remediation: list[dict[str, Any]] | None) -> str:
    """ASFF Remediation.Recommendation.Text (at most 512 characters): the first verified change."""
    if remediation:
        first = remediation[0]
        text = f"{first.get('summary')} ({'verified' if first.get('verified') else 'not verified'} by kmsaudit)"
        if first.get("command"):
            text += f": {first['command']}"
        if len(remediation) > 1:
            text += f". {len(remediation) - 1} more: kmsaudit explain {f.get('id')}"
        return text[:512]
    return (
        f"Run kmsaudit explain {f.get('id')}: the statements this access rests on and a verified change that removes it"
    )


def asff(
    item: dict[str, Any], account: str, partition: str, region: str, remediation: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One queued finding (its state, the finding as SPEC §4 has it, when first and last sent) as
    an AWS Security Finding Format object for the sending account's default product;
    `remediation`: the finding's verified changes (SPEC §4), the first as the recommendation."""
    f = item["finding"]
    archived = item["state"] == "ARCHIVED"
    severity = _SEVERITY.get(str(f.get("severity")), "INFORMATIONAL")
    accepted = bool(f.get("accepted"))
    actions = ", ".join(f.get("actions") or []) or "no action"
    title = {
        "public": "Anyone can use a KMS key",
        "effective": "A principal outside the account can use a KMS key",
        "potential": "A KMS key's policy lets a principal outside the account use it",
    }.get(str(f.get("access")), "Cross-account access to a KMS key")
    description = (
        f"{f.get('principal')} ({f.get('zone')}, {f.get('access')} access via {'+'.join(f.get('via') or [])}) "
        f"can use {f.get('key_arn')}: {actions}" + (" when its conditions hold." if f.get("conditional") else ".")
    )
    fields = {
        "kmsaudit/FindingId": str(f.get("id")),
        "kmsaudit/Principal": str(f.get("principal")),
        "kmsaudit/PrincipalAccount": str(f.get("principal_account")),
        "kmsaudit/Access": str(f.get("access")),
        "kmsaudit/Zone": str(f.get("zone")),
        "kmsaudit/Via": "+".join(f.get("via") or []),
        "kmsaudit/KeyAccount": str(f.get("key_account")),
        "kmsaudit/Conditional": str(bool(f.get("conditional"))).lower(),
    }
    if f.get("accepted_by"):
        fields["kmsaudit/AcceptedBy"] = str(f["accepted_by"])
    return {
        "SchemaVersion": "2018-10-08",
        "Id": str(f.get("id")),
        "ProductArn": f"arn:{partition}:securityhub:{region}:{account}:product/{account}/default",
        "GeneratorId": f"kmsaudit/{f.get('kind', 'access')}/{f.get('access')}",
        "AwsAccountId": account,
        "Types": TYPES,
        "CreatedAt": _iso(float(item["first_at"])),
        "UpdatedAt": _iso(float(item["at"])),
        "Severity": {"Label": severity, "Original": str(f.get("severity"))},
        "FindingProviderFields": {"Severity": {"Label": severity, "Original": str(f.get("severity"))}, "Types": TYPES},
        "Title": title[:256],
        "Description": description[:1024],
        "ProductName": "kmsaudit",
        "CompanyName": "kmsaudit",
        "Resources": [
            {
                "Type": "AwsKmsKey",
                "Id": str(f.get("key_arn")),
                "Partition": str(f.get("key_arn", "arn:aws")).split(":")[1] or "aws",
                "Region": str(f.get("region")),
            }
        ],
        "Compliance": {"Status": "PASSED" if archived or accepted else "FAILED"},
        "Workflow": {"Status": "SUPPRESSED" if accepted else "NEW"},
        "RecordState": "ARCHIVED" if archived else "ACTIVE",
        "ProductFields": fields,
        **({} if archived else {"Remediation": {"Recommendation": {"Text": _recommendation(f, remediation)}}}),
    }


class SecurityHubExport:
    """One `[[export]] type = "securityhub"`: a sink of the outbox that sends in batches."""

    def __init__(self, settings: ExportSettings, scan: ScanSettings, trusted: Sequence[str] = ()) -> None:
        self.settings = settings
        self.scan = scan
        self.name = settings.sink_name
        self.trusted = tuple(trusted)  # the zone of trust, to decide findings again for their remediation

    async def deliver_due(self, store: Store, deadline: float, now: float | None = None) -> int:
        """Send what is due, batch by batch, until done or `deadline` (monotonic); returns how
        many were delivered. Never raises for AWS's failures: they wait for their backoff."""
        started = time.monotonic()
        items = store.due_alerts(now if now is not None else time.time(), DUE_PER_ROUND, sink=self.name)
        if not items:
            return 0
        region = self.settings.region
        api = Api(self.scan)
        delivered = 0
        active = [item["event"]["finding"] for item in items if item["event"].get("state") == "ACTIVE"]
        fixes = await asyncio.to_thread(explain_findings, store.path, active, self.trusted)  # bounded in time
        deadline += time.monotonic() - started  # that time is not the sending's
        async with Sessions(self.scan) as sessions:
            try:
                session = await sessions.for_account("export", self.settings.role_arn, self.settings.external_id)
                sts = await sessions.client(session, "sts", region)
                identity = await api.call(sts, "export", region, "GetCallerIdentity")
                account, partition = str(identity["Account"]), str(identity["Arn"]).split(":")[1]
                client = await sessions.client(session, "securityhub", region)
            except CollectError as exc:
                self._failed(store, items, str(exc))
                return 0
            for start in range(0, len(items), BATCH):
                if time.monotonic() >= deadline:
                    break
                chunk = items[start : start + BATCH]
                findings = [
                    asff(
                        item["event"],
                        account,
                        partition,
                        region,
                        fixes.get(str(item["event"]["finding"].get("id")), ((), []))[1],
                    )
                    for item in chunk
                ]
                try:
                    response = await api.call(client, "export", region, "BatchImportFindings", Findings=findings)
                except CollectError as exc:
                    self._failed(store, items[start:], str(exc))
                    break
                errors = {
                    str(f.get("Id")): f"{f.get('ErrorCode', '')}: {f.get('ErrorMessage', '')}"
                    for f in response.get("FailedFindings") or []
                }
                ok = [item["event_id"] for item in chunk if str(item["event"]["finding"].get("id")) not in errors]
                store.mark_delivered_many(ok, self.name, time.time())
                bad = [item for item in chunk if str(item["event"]["finding"].get("id")) in errors]
                if bad:
                    self._failed(store, bad, "; ".join(sorted(set(errors.values())))[:300])
                delivered += len(ok)
        log.info("export.delivered", export=self.name, delivered=delivered, due=len(items))
        return delivered

    def _failed(self, store: Store, items: list[dict[str, Any]], reason: str) -> None:
        now = time.time()
        store.mark_failed_many(
            [(item["event_id"], reason, now + backoff(item["attempts"])) for item in items], self.name
        )
        log.warning("export.failed", export=self.name, findings=len(items), reason=reason)


def build_exports(
    exports: list[ExportSettings], scan: ScanSettings, trusted: Sequence[str] = ()
) -> list[SecurityHubExport]:
    return [SecurityHubExport(settings, scan, trusted) for settings in exports]
