"""Who is asking (subjects), and the access one policy gives them as action masks.

`Access` keeps two masks: actions allowed for sure, and actions allowed only if undecided
conditions hold, with those conditions. Key policy ∧ IAM ∧ ¬Deny is mask algebra on these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kmsaudit.evaluator.conditions import FALSE, TRUE, UNKNOWN, Context, Value, evaluate_block
from kmsaudit.evaluator.match import match_once
from kmsaudit.evaluator.memo import MISSING, Memo
from kmsaudit.evaluator.statements import ConditionClause, Statement

# A condition description: hashable (key, value) pairs, made a dict only for output.
Desc = tuple[tuple[str, Any], ...]
Conditions = tuple[tuple[int, Desc], ...]  # (actions it decides, description)


class Access(NamedTuple):
    """Actions allowed for sure, and actions allowed only if the listed conditions hold.

    A named tuple: verdicts are made and compared by value millions of times in a scan."""

    sure: int = 0
    maybe: int = 0  # never overlaps `sure`
    conditions: Conditions = ()

    @property
    def any(self) -> int:
        return self.sure | self.maybe

    def restrict(self, mask: int) -> Access:
        if not (self.sure | self.maybe) & ~mask:
            return self  # conditions are always kept to `maybe` already
        maybe = self.maybe & mask
        return Access(self.sure & mask, maybe, _keep(self.conditions, maybe))

    def both(self, other: Access) -> Access:
        """Both sides must allow (SPEC §2.1)."""
        sure = self.sure & other.sure
        maybe = (self.any & other.any) & ~sure
        return Access(sure, maybe, _keep(self.conditions + other.conditions, maybe))

    def either(self, other: Access) -> Access:
        """Two independent paths (policies or a grant): the union."""
        sure = self.sure | other.sure
        maybe = (self.maybe | other.maybe) & ~sure
        return Access(sure, maybe, _keep(self.conditions + other.conditions, maybe))


NO_ACCESS = Access()


def _keep(conditions: Conditions, maybe: int) -> Conditions:
    if not maybe:
        return ()
    seen: set[tuple[int, Desc]] = set()
    out = []
    for mask, desc in conditions:
        if mask & maybe:
            marker = (mask & maybe, desc)
            if marker not in seen:
                seen.add(marker)
                out.append(marker)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Subject:
    """A principal the key policy is asked about.

    kind: `concrete` (a user/role, or a named ARN), `account` (any principal of the account,
    what its administrators could delegate to), `outsider` (any principal of an account
    nobody named), `service`, `federated`, `canonical`.
    """

    kind: str
    principal: str  # what a finding shows
    account: str = ""  # "" for outsider and services
    arn: str = ""  # concrete: the ARN a statement may name
    role_name: str = ""  # concrete role: for assumed-role session principals
    bounded: bool = False  # concrete: has a permissions boundary (SPEC §2.9, NotPrincipal)
    context: Mapping[str, Value] = field(default_factory=dict)
    # source -> statement -> verdict, for statements whose verdict depends on the subject alone
    # (`Statement.subject_only`). Subjects live as long as their AuditScope.
    memo: dict[str, Memo] = field(default_factory=dict, compare=False, repr=False)


def principal_matches(stmt: Statement, subject: Subject) -> tuple[int, Desc | None]:
    """Does the statement's Principal/NotPrincipal apply to the subject? (SPEC §2.5)."""
    pset = stmt.principals
    if pset is None:
        return TRUE, None  # identity policy: the principal it is attached to
    result, extra = FALSE, None
    if pset.any:
        result = TRUE
    elif subject.kind in ("service", "federated", "canonical"):
        result = TRUE if subject.principal.lower() in pset.others else FALSE
    elif subject.account in pset.accounts or (subject.kind == "concrete" and subject.arn in pset.arns):
        result = TRUE
    elif subject.kind == "concrete" and pset.sessions:
        for ref in pset.sessions:
            if ref.value == subject.arn:
                result = TRUE
                break
            if ref.account == subject.account and ref.role_name == subject.role_name:
                # Only one session of the role is named: access depends on the session name.
                result = UNKNOWN
                extra = (("operator", "AssumedRoleSession"), ("key", "aws:userid"), ("values", (ref.value,)))
    if stmt.not_principal:
        if subject.bounded and not stmt.allow:
            # IAM User Guide, "NotPrincipal": a Deny with NotPrincipal always denies a principal
            # that has a permissions boundary, whatever the NotPrincipal names (SPEC §2.9).
            return TRUE, None
        return (FALSE, None) if result == TRUE else (TRUE, None)
    return result, extra


def resource_matches(stmt: Statement, key_arn: str, seen: dict[str, bool] | None = None) -> bool:
    """Does the statement's Resource/NotResource cover the key? `seen`: pattern results so far
    for this key (the same few account-wide patterns recur in many principals' policies)."""
    if stmt.resource_all or stmt.resources is None:
        return True
    hit = key_arn in stmt.resource_exact
    if not hit and stmt.resource_wild:
        memo = {} if seen is None else seen
        for pattern in stmt.resource_wild:
            if match_once(memo, pattern, key_arn):
                hit = True
                break
    return not hit if stmt.not_resource else hit


def _describe(stmt: Statement, source: str, clause_desc: Desc) -> Desc:
    head: Desc = (("source", source), ("effect", "Allow" if stmt.allow else "Deny"))
    if stmt.sid:
        head += (("sid", stmt.sid),)
    return head + clause_desc


# A statement's verdict for a subject: None (does not apply), or (applies for sure, the
# undecided conditions that make it apply only maybe).
Verdict = tuple[bool, tuple[Desc, ...]] | None
_SURE: Verdict = (True, ())


def _verdict(
    stmt: Statement, subject: Subject, ctx: Context, source: str, clauses: tuple[ConditionClause, ...] | None = None
) -> Verdict:
    matched, extra = principal_matches(stmt, subject)
    if matched == FALSE:
        return None
    clauses = stmt.conditions if clauses is None else clauses
    state, undecided = (TRUE, ()) if not clauses else evaluate_block(clauses, ctx)
    if state == FALSE:
        return None
    if state == TRUE and matched == TRUE:
        return _SURE
    descs = [_describe(stmt, source, c.describe()) for c in undecided]
    if extra is not None:
        descs.append(_describe(stmt, source, extra))
    return False, tuple(descs)


def evaluate_statements(
    statements: tuple[Statement, ...],
    subject: Subject,
    ctx: Context,
    source: str,
    key_arn: str | None = None,
) -> Access:
    """One policy's verdict for a subject: Allows OR together, any Deny wins (SPEC §2.1).

    `key_arn`: check each statement's Resource against it (identity policies); None when the
    caller already kept only the statements that apply to the key.
    """
    allow_sure = allow_maybe = deny_sure = deny_maybe = 0
    allow_conds: list[tuple[int, Desc]] = []
    deny_conds: list[tuple[int, Desc]] = []
    memo = subject.memo.get(source)
    if memo is None:
        memo = subject.memo[source] = Memo(50_000)
    for stmt in statements:
        if not stmt.action_mask or (key_arn is not None and not resource_matches(stmt, key_arn)):
            continue
        # Each part of the statement (SPEC §2.7: split by operation-bound condition keys).
        for mask, clauses, marker in stmt.parts:
            if stmt.subject_only:
                verdict = memo.get(marker, MISSING)
                if verdict is MISSING:
                    verdict = memo[marker] = _verdict(stmt, subject, ctx, source, clauses)
            else:
                verdict = _verdict(stmt, subject, ctx, source, clauses)
            if verdict is None:
                continue
            sure, descs = verdict
            if sure:
                if stmt.allow:
                    allow_sure |= mask
                else:
                    deny_sure |= mask
                continue
            if stmt.allow:
                allow_maybe |= mask
                allow_conds.extend((mask, d) for d in descs)
            else:
                deny_maybe |= mask
                deny_conds.extend((mask, d) for d in descs)
    if not (allow_sure | allow_maybe):
        return NO_ACCESS
    sure = allow_sure & ~deny_sure & ~deny_maybe
    maybe = (allow_sure | allow_maybe) & ~deny_sure & ~sure
    if not maybe:
        return Access(sure) if sure else NO_ACCESS
    return Access(sure, maybe, _keep(tuple(allow_conds + deny_conds), maybe))


def evaluate_levels(
    levels: tuple[tuple[Statement, ...], ...], subject: Subject, ctx: Context, source: str, key_arn: str
) -> Access | None:
    """Organization policies: every level (root, OUs, account) must allow; None if none apply."""
    result: Access | None = None
    for statements in levels:
        level = evaluate_statements(statements, subject, ctx, source, key_arn)
        result = level if result is None else result.both(level)
    return result


def apply_denies(
    access: Access, statements: tuple[Statement, ...], subject: Subject, ctx: Context, source: str
) -> Access:
    """Remove what the Deny statements deny (an explicit Deny beats a grant too)."""
    if not access.any:
        return access
    denies = tuple(s for s in statements if not s.allow)
    if not denies:
        return access
    deny_sure = deny_maybe = 0
    conds: list[tuple[int, Desc]] = []
    for stmt in denies:
        if not stmt.action_mask & access.any:
            continue
        matched, _ = principal_matches(stmt, subject)
        if matched == FALSE:
            continue
        for mask, part_clauses, _marker in stmt.parts:
            clauses = stmt.conditions if part_clauses is None else part_clauses
            state, undecided = (TRUE, ()) if not clauses else evaluate_block(clauses, ctx)
            if state == FALSE:
                continue
            if state == TRUE and matched == TRUE:
                deny_sure |= mask
            else:
                deny_maybe |= mask
                conds.extend((mask, _describe(stmt, source, c.describe())) for c in undecided)
    sure = access.sure & ~deny_sure & ~deny_maybe
    maybe = (access.any & ~deny_sure) & ~sure
    return Access(sure, maybe, _keep(access.conditions + tuple(conds), maybe))
