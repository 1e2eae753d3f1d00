"""Records shared by every part of kmsaudit: what was collected and what was decided.

Standard library only, so the evaluator, the store and the collector can all import it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NewType

AccountId = NewType("AccountId", str)
Arn = NewType("Arn", str)

ACCESS_LEVELS = ("public", "potential", "effective")
# The scope that stands for organization discovery (account "organization", region "global"):
# when it fails, the member accounts it would have listed are not scanned (issue #13).
ORGANIZATION = "organization"
DRIFT_KINDS = (
    "added",
    "removed",
    "widened",
    "narrowed",
    "policy-changed",
    "key-created",
    "key-deleted",
    "key-unreadable",
    "key-readable",
    "acceptance-expired",
    "scope-failed",
)
SEVERITIES = ("low", "medium", "high", "critical")
VIA_VALUES = ("grant", "iam-policy", "key-policy")


def severity_rank(severity: str) -> int:
    """Order of severities, for thresholds such as `--fail-on high`."""
    return SEVERITIES.index(severity)


@dataclass(frozen=True, slots=True)
class Grant:
    """One KMS grant, as `ListGrants` returns it."""

    grant_id: str
    grantee_principal: str
    operations: tuple[str, ...]
    key_id: str = ""
    name: str = ""
    retiring_principal: str = ""
    issuing_account: str = ""
    # {"EncryptionContextSubset": {...}} or {"EncryptionContextEquals": {...}}, or None
    constraints: dict[str, dict[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A KMS key and everything about it the evaluator needs."""

    arn: str
    account: str
    region: str
    key_id: str
    # The key policy as AWS returned it: a JSON string (or, from tests, an object).
    policy: Any = None
    key_manager: str = "CUSTOMER"
    key_state: str = "Enabled"
    key_spec: str = ""
    key_usage: str = ""
    origin: str = ""
    multi_region: bool | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    grants: tuple[Grant, ...] = ()
    # Reads that failed for this key alone (e.g. the key policy denies the audit role).
    errors: tuple[str, ...] = ()
    # The error code when one of the key's reads still failed after every retry: the key is not
    # evaluated from half its data; its last good state is kept (SPEC §5, key-unreadable).
    unreadable: str = ""


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One identity policy attached to a principal (inline, managed or a group's)."""

    name: str  # "inline:Name", the managed policy ARN, or "group:G/inline:Name"
    document: Any


@dataclass(frozen=True, slots=True)
class IamPrincipal:
    """An IAM user or role with every identity policy that applies to it."""

    arn: str
    account: str
    kind: str  # "user" | "role"
    name: str
    policies: tuple[PolicyDocument, ...] = ()
    boundary: PolicyDocument | None = None
    # Managed policies named but not present in the collected details.
    unresolved: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()  # (key, value) as authorization details list them


@dataclass(frozen=True, slots=True)
class Organization:
    """What is known of the audited AWS Organization."""

    org_id: str
    accounts: frozenset[str] = frozenset()
    # account -> levels (root, OUs…, account) -> documents attached at that level
    scps: dict[str, tuple[tuple[Any, ...], ...]] = field(default_factory=dict)
    rcps: dict[str, tuple[tuple[Any, ...], ...]] = field(default_factory=dict)
    org_paths: dict[str, str] = field(default_factory=dict)


class Finding(NamedTuple):
    """One external principal's access to one key (SPEC §4, a contract).

    A named tuple, not a dataclass: a scan makes hundreds of thousands of these, and a tuple
    is built 5× faster than a frozen dataclass and leaves the garbage collector's lists once
    its fields are plain values (bench/evaluator.py). Still immutable; compare with `==`.
    """

    key_arn: str
    key_account: str
    region: str
    principal: str
    principal_account: str
    access: str
    zone: str
    via: tuple[str, ...]
    actions: tuple[str, ...]
    conditional: bool
    conditions: tuple[dict[str, Any], ...]
    severity: str
    kind: str = "access"  # "access", or "unparseable" when the key policy cannot be read
    # Actions available only when the listed conditions hold (a subset of `actions`).
    conditional_actions: tuple[str, ...] = ()
    # Known-good access (README "Accepting known access"; SPEC §4): covered by an unexpired
    # acceptance entry. `outgrew`: the entry that covers this key and principal but not this much.
    accepted: bool = False
    accepted_by: str | None = None
    outgrew: str | None = None

    @property
    def id(self) -> str:
        parts = [self.key_arn, self.principal, self.access, ",".join(self.via)]
        if self.principal_account != "*" and not self.principal.startswith("arn:"):
            # A service principal acts for several accounts: one finding each (SPEC §2.11).
            parts.append(self.principal_account)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """The inverse of `to_dict` (for findings read back from a snapshot)."""
        return cls(
            key_arn=data["key_arn"],
            key_account=data["key_account"],
            region=data["region"],
            principal=data["principal"],
            principal_account=data["principal_account"],
            access=data["access"],
            zone=data["zone"],
            via=tuple(data["via"]),
            actions=tuple(data["actions"]),
            conditional=bool(data["conditional"]),
            conditions=tuple(data["conditions"]),
            severity=data["severity"],
            kind=data.get("kind", "access"),
            conditional_actions=tuple(data.get("conditional_actions", ())),
            accepted=bool(data.get("accepted", False)),
            accepted_by=data.get("accepted_by"),
            outgrew=data.get("outgrew"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "kind": self.kind,
            "key_arn": self.key_arn,
            "key_account": self.key_account,
            "region": self.region,
            "principal": self.principal,
            "principal_account": self.principal_account,
            "access": self.access,
            "zone": self.zone,
            "via": list(self.via),
            "actions": list(self.actions),
            "conditional": self.conditional,
            "conditional_actions": list(self.conditional_actions),
            "conditions": [dict(c) for c in self.conditions],
            "severity": self.severity,
            "accepted": self.accepted,
            "accepted_by": self.accepted_by,
        }
        if self.outgrew is not None:
            out["outgrew"] = self.outgrew
        return out


@dataclass(frozen=True, slots=True)
class Lint:
    """Something wrong or risky in a policy that is not access (a separate list)."""

    kind: str
    message: str
    key_arn: str = ""
    account: str = ""
    principal: str = ""
    policy: str = ""
    sid: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "key_arn": self.key_arn,
            "account": self.account,
            "principal": self.principal,
            "policy": self.policy,
            "sid": self.sid,
        }


@dataclass(frozen=True, slots=True)
class ScopeResult:
    """One account × region of a scan: its keys, or why it could not be read."""

    account: str
    region: str
    ok: bool
    keys: tuple[KeyRecord, ...] = ()
    error: str = ""
    error_code: str = ""
    duration_seconds: float = 0.0
    # A re-read of some keys only (a CloudTrail event): the keys asked for, as ARNs. Those not in
    # `keys` are gone; every other key of the scope keeps its last state.
    partial: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ScopeStatus:
    account: str
    region: str
    ok: bool
    keys: int = 0
    error: str = ""
    error_code: str = ""
    # (key ARN, key policy text or None if unreadable): for drift and history. With `key_hashes`,
    # only the keys whose policy changed since the last good state keep their text (memory).
    key_policies: tuple[tuple[str, str | None], ...] = ()
    # (key ARN, policy hash) of every key read, when the texts above are only the changed ones
    key_hashes: tuple[tuple[str, str], ...] = ()
    # (key ARN, aliases, KeyManager) of the keys with an alias or managed by AWS: for people
    key_names: tuple[tuple[str, tuple[str, ...], str], ...] = ()
    # (key ARN, error code) of the keys whose reads failed after every retry
    unreadable: tuple[tuple[str, str], ...] = ()
    # Only these keys (ARNs) were re-read (README "Real-time detection"): the scope's other keys
    # keep their last good state; a key listed here but not read is gone.
    partial: tuple[str, ...] | None = None
    # (key ARN, kmsaudit/evidence.py key_text) of each key read whole: for `kmsaudit explain`
    key_evidence: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ScanResult:
    findings: tuple[Finding, ...]
    lints: tuple[Lint, ...]
    scopes: tuple[ScopeStatus, ...]
    # Accounts whose IAM could not be read: their principals' effective access is unknown.
    iam_failures: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0
    requests: int = 0
    throttled: int = 0
    keys: int = 0
    # ((service, operation, outcome), attempts) of every HTTP attempt, retries included
    attempts: tuple[tuple[tuple[str, str, str], int], ...] = ()
    # Acceptance entries configured, and those that accepted a finding of this scan
    accept_configured: frozenset[str] = frozenset()
    accept_matched: frozenset[str] = frozenset()
    # CPU seconds the evaluation took (bench/scan.py sets the client's request cost apart from it)
    evaluation_cpu: float = 0.0
    # A re-read of some keys (README "Real-time detection"): IAM and the organization as last
    # read, and every scope it does not name carried over unchanged (SPEC §5).
    reread: bool = False
    # (account, region) of every configured scope: the snapshot must account for each (SPEC §5),
    # read now, carried over or failed; the store refuses to commit one that does not.
    expected: frozenset[tuple[str, str]] = frozenset()
    # (subject, text) of the IAM and organization documents read now (kmsaudit/evidence.py)
    evidence: tuple[tuple[str, str], ...] = ()

    @property
    def failed_scopes(self) -> tuple[ScopeStatus, ...]:
        return tuple(s for s in self.scopes if not s.ok)


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A change between a scope's last complete snapshot and now (SPEC §5, a contract)."""

    kind: str  # one of DRIFT_KINDS
    key_arn: str
    principal: str
    before: Any
    after: Any
    severity: str
    account: str = ""
    region: str = ""
    snapshot_id: int = 0
    detected_at: float = 0.0

    @property
    def id(self) -> str:
        """Stable across restarts: the idempotency key of the alert it raises. The finding's access
        level and account are part of it: one principal may gain `potential` and `effective`
        access (or a service act for two accounts) in one scan, two events (issue #19)."""
        parts = [str(self.snapshot_id), self.kind, self.key_arn, self.principal, self.account, self.region]
        finding = self.after if isinstance(self.after, dict) else self.before if isinstance(self.before, dict) else {}
        if "access" in finding:
            parts += [str(finding["access"]), str(finding.get("principal_account", ""))]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "key_arn": self.key_arn,
            "principal": self.principal,
            "account": self.account,
            "region": self.region,
            "before": self.before,
            "after": self.after,
            "severity": self.severity,
            "snapshot_id": self.snapshot_id,
            "detected_at": self.detected_at,
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What the evaluator decided for a set of keys."""

    findings: tuple[Finding, ...] = ()
    lints: tuple[Lint, ...] = ()
    decisions: int = 0  # (key, principal) pairs decided; for benchmarks and logs
    # (key ARN, canonical policy text) of every key: what is hashed, stored and compared (SPEC
    # §5); the raw text when it is not a policy, None when it could not be read
    policies: tuple[tuple[str, str | None], ...] = ()
