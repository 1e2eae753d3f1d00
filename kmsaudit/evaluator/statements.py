"""A policy as the evaluator reads it: compiled statements, their condition clauses and their
principals indexed for set lookups (parsed from documents by kmsaudit/evaluator/policy.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kmsaudit.evaluator.condkeys import TABLE
from kmsaudit.evaluator.match import PrincipalRef


@dataclass(frozen=True, slots=True)
class ConditionClause:
    """One `operator: {key: values}` pair of a Condition block."""

    operator: str  # as written, e.g. "ForAnyValue:StringLikeIfExists"
    base: str  # lower-case family operator, e.g. "stringlike"
    prefix: str  # "", "foranyvalue" or "forallvalues"
    if_exists: bool
    key: str  # as written
    key_lc: str
    values: tuple[str, ...]

    def describe(self) -> tuple[tuple[str, Any], ...]:
        return (("operator", self.operator), ("key", self.key), ("values", self.values))


@dataclass(frozen=True, slots=True)
class PrincipalSet:
    """A Principal element indexed for set lookups (matching runs per principal and key)."""

    any: bool
    accounts: frozenset[str]
    arns: frozenset[str]
    sessions: tuple[PrincipalRef, ...]
    others: frozenset[str]  # service, federated and canonical principals, lower-case
    refs: tuple[PrincipalRef, ...]
    mentioned: frozenset[str]  # every account named, as itself or by a principal of it
    services: tuple[str, ...] = ()  # AWS service principals, as written (SPEC §2.11)

    @classmethod
    def of(cls, refs: tuple[PrincipalRef, ...]) -> PrincipalSet:
        return cls(
            any=any(r.kind == "any" for r in refs),
            accounts=frozenset(r.account for r in refs if r.kind == "account"),
            arns=frozenset(r.value for r in refs if r.kind == "iam"),
            sessions=tuple(r for r in refs if r.kind == "session"),
            others=frozenset(r.value.lower() for r in refs if r.kind in ("service", "federated", "canonical")),
            refs=refs,
            mentioned=frozenset(r.account for r in refs if r.account),
            services=tuple(dict.fromkeys(r.value for r in refs if r.kind == "service")),
        )


# Condition keys whose values come from the key itself, not the caller (subjects.resource_context puts them in
# the context, with `aws:ResourceTag/…`). A statement that tests none of them decides the same
# way for one principal on every key, so its verdict is worked out once per principal.
RESOURCE_KEYS = frozenset(k for k, info in TABLE.items() if info.decided == "resource" and not k.endswith(("/", ":")))


# Keys only an AWS service calling has (`aws:SourceAccount`…, `aws:PrincipalServiceName`), and
# `aws:PrincipalIsAWSService`: a "*" statement with one may admit services (SPEC §2.11).
SERVICE_CONDITION_KEYS = frozenset(
    {k for k, info in TABLE.items() if info.presence in ("service", "service-source")} | {"aws:principalisawsservice"}
)


def subject_only_conditions(conditions: tuple[ConditionClause, ...]) -> bool:
    return not any(
        c.key_lc in RESOURCE_KEYS or c.key_lc.startswith("aws:resourcetag/") or any("${" in v for v in c.values)
        for c in conditions
    )


# eq=False: statements are interned (one object per distinct statement, `_cached_statement`),
# compared and hashed by identity, which is what the per-principal verdict caches key on.
# Not frozen only because a frozen dataclass is 8× slower to build, and a scan parses tens of
# thousands of distinct statements: nothing assigns to a Statement after `_statement`.
@dataclass(slots=True, eq=False)
class Statement:
    sid: str
    allow: bool
    principals: PrincipalSet | None  # None: no Principal element (identity policy)
    not_principal: bool
    action_mask: int  # after NotAction complement
    action_patterns: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...] | None  # None: no Resource element
    not_resource: bool
    conditions: tuple[ConditionClause, ...]
    # ("nothing" | "local-only" | "unique-id" | "invalid", text): material for the lints
    notes: tuple[tuple[str, str], ...] = ()
    resource_all: bool = True  # no Resource element, or a Resource of "*": every key
    subject_only: bool = True  # no condition on the key's own properties (RESOURCE_KEYS, tags, ${…})
    resource_exact: frozenset[str] = frozenset()  # the Resource values without wildcards
    resource_wild: tuple[str, ...] = ()  # and those with
    local_notes_only: bool = False  # every note is "local-only"
    # A condition on a key only an AWS service acting for a resource has (`aws:SourceAccount`…,
    # `aws:PrincipalIsAWSService`): a "*" statement with one may admit services (SPEC §2.11).
    service_keys: bool = False
    # What access.py evaluates: (actions, clauses or None for `conditions`, verdict-cache key) —
    # the whole statement, or its parts split by operation-bound condition keys
    # (conditions.operation_parts). The whole statement unless policy._statement splits it.
    parts: tuple[tuple[int, tuple[ConditionClause, ...] | None, object], ...] = ()

    def __post_init__(self) -> None:
        if not self.parts:  # never a statement that evaluates to nothing by omission
            self.parts = ((self.action_mask, None, self),)


@dataclass(frozen=True, slots=True)
class Policy:
    statements: tuple[Statement, ...]  # in canonical order (canonical.py): as KMS's order is not
    problems: tuple[str, ...] = ()  # statements skipped and why (reported as lints)
    canonical: str | None = None  # the canonical text (canonical.py); None if it cannot be made
