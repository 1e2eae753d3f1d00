"""Drift (SPEC §5), pure: a scope's last complete state against its state now.

A scope whose collection failed yields only `scope-failed`: its last good state carries over,
so a failure can never look like access being removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsaudit.model import DriftEvent

# (key ARN, principal, access, principal account): a service principal is one finding per
# account it acts for (SPEC §2.11); for every other principal the account follows from it.
Slot = tuple[str, str, str, str]


def slot(finding: Mapping[str, Any]) -> Slot:
    return (finding["key_arn"], finding["principal"], finding["access"], finding.get("principal_account", ""))


@dataclass(frozen=True, slots=True)
class ScopeState:
    """What one scope looked like: its findings (as contract dicts) and its keys' policy hashes."""

    findings: Mapping[Slot, Mapping[str, Any]]
    keys: Mapping[str, str]  # key ARN -> sha256 of the policy text ("" when it could not be read)
    # key ARN -> {"aliases": [...], "manager": "AWS"|"CUSTOMER"}, for keys with an alias or managed
    # by AWS: what tables show beside an ARN. Not drift: a renamed key is the same key.
    names: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        findings: Iterable[Mapping[str, Any]],
        key_policies: Iterable[tuple[str, str | None]],
        key_names: Iterable[tuple[str, tuple[str, ...], str]] = (),
    ) -> ScopeState:
        return cls(
            findings={slot(f): f for f in findings},
            keys={arn: policy_hash(text) for arn, text in key_policies},
            names={arn: {"aliases": list(aliases), "manager": manager} for arn, aliases, manager in key_names},
        )

    def carry(self, before: ScopeState | None, iam_failed: Iterable[str]) -> ScopeState:
        """Keep the effective access of principals whose account's IAM could not be read.

        Without their IAM those findings cannot be computed; dropping them would read as access
        removed (SPEC §5: a failure must never look like that). The last good ones carry over.
        """
        failed = set(iam_failed)
        if before is None or not failed:
            return self
        findings = dict(self.findings)
        for where, finding in before.findings.items():
            if (
                where not in findings
                and finding.get("access") == "effective"
                and finding.get("principal_account") in failed
                and "iam-policy" in finding.get("via", ())
                and where[0] in self.keys
            ):
                findings[where] = finding
        return ScopeState(findings, self.keys, self.names)

    def digest(self) -> str:
        """Equal digests: no drift, nothing new to store."""
        state: dict[str, Any] = {
            "f": sorted(self.findings.values(), key=lambda f: f["id"]),
            "k": sorted(self.keys.items()),
        }
        if self.names:  # absent when empty: states stored before names existed keep their digest
            state["n"] = sorted(self.names.items())
        body = json.dumps(state, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def to_json(self) -> str:
        body: dict[str, Any] = {"findings": list(self.findings.values()), "keys": self.keys}
        if self.names:
            body["names"] = self.names
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ScopeState:
        data = json.loads(text)
        return cls(
            findings={slot(f): f for f in data["findings"]},
            keys=dict(data["keys"]),
            names=dict(data.get("names", {})),
        )


def policy_hash(text: str | None) -> str:
    return "" if text is None else hashlib.sha256(text.encode()).hexdigest()


def _strength(finding: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    actions = set(finding.get("actions", ()))
    sure = actions - set(finding.get("conditional_actions", ()))
    if finding.get("conditional"):
        sure = set()
    return actions, sure


_EVENT_SEVERITY_FLOOR = "low"


def diff_scope(
    account: str,
    region: str,
    before: ScopeState | None,
    after: ScopeState,
    *,
    snapshot_id: int = 0,
    detected_at: float = 0.0,
) -> list[DriftEvent]:
    """Events from `before` (the last complete state; None: first scan, a baseline) to `after`."""
    if before is None:
        return []
    events: list[DriftEvent] = []

    def event(kind: str, key_arn: str, principal: str, old: Any, new: Any, severity: str) -> None:
        events.append(
            DriftEvent(kind, key_arn, principal, old, new, severity, account, region, snapshot_id, detected_at)
        )

    unreadable = {where[0] for where, f in after.findings.items() if f.get("kind") == "unparseable"}
    for arn in sorted(set(after.keys) - set(before.keys)):
        event("key-created", arn, "", None, {"policy_sha256": after.keys[arn]}, _EVENT_SEVERITY_FLOOR)
    for arn in sorted(set(before.keys) - set(after.keys)):
        event("key-deleted", arn, "", {"policy_sha256": before.keys[arn]}, None, _EVENT_SEVERITY_FLOOR)
    gone_keys = set(before.keys) - set(after.keys)
    touched: set[str] = set()
    for where in sorted(set(before.findings) | set(after.findings)):
        old, new = before.findings.get(where), after.findings.get(where)
        key_arn, principal = where[0], where[1]
        if old is None and new is not None:
            event("added", key_arn, principal, None, dict(new), str(new["severity"]))
        elif new is None and old is not None:
            if key_arn in unreadable:
                continue  # an unreadable policy is not access removed
            if key_arn not in gone_keys:
                event("removed", key_arn, principal, dict(old), None, _EVENT_SEVERITY_FLOOR)
        elif old is not None and new is not None:
            (old_all, old_sure), (new_all, new_sure) = _strength(old), _strength(new)
            if new_all - old_all or new_sure - old_sure:
                event("widened", key_arn, principal, dict(old), dict(new), str(new["severity"]))
            elif (old_all - new_all or old_sure - new_sure) and key_arn not in unreadable:
                event("narrowed", key_arn, principal, dict(old), dict(new), _EVENT_SEVERITY_FLOOR)
            else:
                continue
        else:
            continue
        touched.add(key_arn)
    for arn in sorted(set(before.keys) & set(after.keys)):
        if before.keys[arn] != after.keys[arn] and arn not in touched:
            event(
                "policy-changed",
                arn,
                "",
                {"policy_sha256": before.keys[arn]},
                {"policy_sha256": after.keys[arn]},
                _EVENT_SEVERITY_FLOOR,
            )
    return events


def scope_failed(
    account: str, region: str, reason: str, code: str, *, snapshot_id: int = 0, detected_at: float = 0.0
) -> DriftEvent:
    return DriftEvent(
        "scope-failed",
        "",
        "",
        None,
        {"error": reason, "code": code},
        "medium",
        account,
        region,
        snapshot_id,
        detected_at,
    )
