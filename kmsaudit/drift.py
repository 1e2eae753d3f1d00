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
    # key ARN -> error code, for keys whose reads failed after every retry (SPEC §5)
    unreadable: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        findings: Iterable[Mapping[str, Any]],
        key_policies: Iterable[tuple[str, str | None]],
        key_names: Iterable[tuple[str, tuple[str, ...], str]] = (),
        unreadable: Iterable[tuple[str, str]] = (),
        key_hashes: Iterable[tuple[str, str]] = (),
    ) -> ScopeState:
        """`key_hashes`, when given, are every key's policy hash (`key_policies` then holds only
        the texts that changed); otherwise the hashes are those of `key_policies`."""
        keys = dict(key_hashes) or {arn: policy_hash(text) for arn, text in key_policies}
        return cls(
            findings={slot(f): f for f in findings},
            keys=keys,
            names={arn: {"aliases": list(aliases), "manager": manager} for arn, aliases, manager in key_names},
            unreadable=dict(unreadable),
        )

    def replacing(self, keys: Iterable[str], reread: ScopeState) -> ScopeState:
        """This state with `keys` (ARNs) as `reread` has them: a CloudTrail event re-read them
        (README "Real-time detection"). A key asked for but absent from `reread` is gone."""
        gone = set(keys)
        return ScopeState(
            findings={w: f for w, f in self.findings.items() if w[0] not in gone} | dict(reread.findings),
            keys={a: h for a, h in self.keys.items() if a not in gone} | dict(reread.keys),
            names={a: n for a, n in self.names.items() if a not in gone} | dict(reread.names),
            unreadable={a: c for a, c in self.unreadable.items() if a not in gone} | dict(reread.unreadable),
        )

    def carry(self, before: ScopeState | None, iam_failed: Iterable[str]) -> ScopeState:
        """Keep what this scan could not read from the last good state (SPEC §5: a failure must
        never look like access removed):
        - the effective access of principals whose account's IAM could not be read;
        - every finding, the policy hash and the name of a key whose reads failed.
        """
        failed = set(iam_failed)
        if before is None or not (failed or self.unreadable):
            return self
        findings = dict(self.findings)
        keys = dict(self.keys)
        names = dict(self.names)
        for where, finding in before.findings.items():
            if where in findings:
                continue
            unread_key = where[0] in self.unreadable and finding.get("kind") != "unparseable"
            unread_iam = (
                finding.get("access") == "effective"
                and finding.get("principal_account") in failed
                and "iam-policy" in finding.get("via", ())
                and where[0] in self.keys
            )
            if unread_key or unread_iam:
                findings[where] = finding
        for arn in self.unreadable:
            if arn in before.keys:
                keys[arn] = before.keys[arn]
            if arn in before.names and arn not in names:
                names[arn] = before.names[arn]
        return ScopeState(findings, keys, names, self.unreadable)

    def digest(self) -> str:
        """Equal digests: no drift, nothing new to store."""
        state: dict[str, Any] = {
            "f": sorted(self.findings.values(), key=lambda f: f["id"]),
            "k": sorted(self.keys.items()),
        }
        if self.names:  # absent when empty: states stored before names existed keep their digest
            state["n"] = sorted(self.names.items())
        if self.unreadable:
            state["u"] = sorted(self.unreadable.items())
        body = json.dumps(state, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def to_json(self) -> str:
        body: dict[str, Any] = {"findings": list(self.findings.values()), "keys": self.keys}
        if self.names:
            body["names"] = self.names
        if self.unreadable:
            body["unreadable"] = self.unreadable
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ScopeState:
        data = json.loads(text)
        return cls(
            findings={slot(f): f for f in data["findings"]},
            keys=dict(data["keys"]),
            names=dict(data.get("names", {})),
            unreadable=dict(data.get("unreadable", {})),
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

    # Keys not read this time (SPEC §5): one event when a key becomes unreadable and one when it
    # is read again; its unparseable marker is neither `added` nor `removed`, its access carried.
    for arn in sorted(set(after.unreadable) - set(before.unreadable)):
        event("key-unreadable", arn, "", None, {"code": after.unreadable[arn]}, "medium")
    for arn in sorted(set(before.unreadable) - set(after.unreadable)):
        if arn in after.keys:
            event("key-readable", arn, "", {"code": before.unreadable[arn]}, None, _EVENT_SEVERITY_FLOOR)
    not_read = set(after.unreadable) | set(before.unreadable)
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
        if key_arn in not_read and "unparseable" in ((old or {}).get("kind"), (new or {}).get("kind")):
            continue  # said by key-unreadable / key-readable
        if old is None and new is not None:
            event("added", key_arn, principal, None, dict(new), str(new["severity"]))
        elif new is None and old is not None:
            if key_arn in unreadable:
                continue  # an unreadable policy is not access removed
            if key_arn not in gone_keys:
                event("removed", key_arn, principal, dict(old), None, _EVENT_SEVERITY_FLOOR)
        elif old is not None and new is not None:
            if old.get("accepted") and not new.get("accepted") and not new.get("outgrew"):
                # The entry expired (or was removed): the access is unaccepted again, and alerts.
                event("acceptance-expired", key_arn, principal, dict(old), dict(new), str(new["severity"]))
                touched.add(key_arn)
                continue
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


def baseline_events(
    account: str, region: str, state: ScopeState, snapshot_id: int, detected_at: float
) -> list[DriftEvent]:
    """A scope's first scan, for the sinks that page it (`on_baseline`): an `added` event per
    finding. Not drift: they are alerted, never stored as events or counted."""
    return [
        DriftEvent(
            "added",
            f["key_arn"],
            f["principal"],
            None,
            dict(f),
            str(f["severity"]),
            account,
            region,
            snapshot_id,
            detected_at,
        )
        for f in sorted(state.findings.values(), key=lambda f: str(f.get("id", "")))
        if f.get("kind", "access") == "access"
    ]
