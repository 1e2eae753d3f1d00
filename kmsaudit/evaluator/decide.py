"""Key policy ∧ IAM ∧ no Deny — or a grant — into findings (SPEC §2–§4)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kmsaudit.evaluator.access import (
    NO_ACCESS,
    Access,
    Subject,
    apply_denies,
    evaluate_levels,
    evaluate_statements,
    resource_matches,
)
from kmsaudit.evaluator.actions import CROSS_ACCOUNT_MASK, grant_operations_mask
from kmsaudit.evaluator.conditions import Context
from kmsaudit.evaluator.findings import KeyFindings, Trace
from kmsaudit.evaluator.keyindex import KeyPolicyIndex
from kmsaudit.evaluator.lints import key_policy_lints
from kmsaudit.evaluator.match import ACCOUNT_RE, arn_account, root_arn
from kmsaudit.evaluator.outsider import is_service_principal
from kmsaudit.evaluator.policy import PolicyParseError, parse_policy
from kmsaudit.evaluator.scope import AuditScope, CompiledPrincipal
from kmsaudit.evaluator.services import VIA_KEY_POLICY, services
from kmsaudit.evaluator.statements import Statement
from kmsaudit.evaluator.subjects import (
    account_subject,
    concrete_subject,
    confined_subjects,
    grantee_subject,
    named_subject,
    outsider_subjects,
    resource_context,
    service_subject,
)
from kmsaudit.gcpause import gc_paused
from kmsaudit.model import Evaluation, Finding, Grant, KeyRecord, Lint

__all__ = ["AuditScope", "evaluate_key", "evaluate_keys"]

VIA_IAM = ("iam-policy", "key-policy")
VIA_GRANT = ("grant",)
_NAMED_KINDS = frozenset({"iam", "session", "federated", "canonical"})
_NO_TAGS: dict[str, str] = {}


def _unparseable(key: KeyRecord, reason: str) -> Finding:
    """SPEC §2.10: a key policy we cannot read is reported, never an exception."""
    return Finding(
        key_arn=key.arn,
        key_account=key.account,
        region=key.region,
        principal="*",
        principal_account="*",
        access="unknown",
        zone="external",
        via=("key-policy",),
        actions=(),
        conditional=True,
        conditions=({"source": "key-policy", "error": reason[:300]},),
        severity="high",
        kind="unparseable",
    )


def _grant_access(grant_id: str, mask: int, constraints: Any) -> Access:
    if not constraints:
        return Access(mask, 0)
    desc = (
        ("source", "grant"),
        ("grant_id", grant_id),
        ("operator", "GrantConstraints"),
        ("key", "kms:EncryptionContext"),
        ("values", (json.dumps(constraints, sort_keys=True, default=str),)),
    )
    return Access(0, mask, ((mask, desc),))


Levels = tuple[tuple[Statement, ...], ...]


def _identity_side(
    cp: CompiledPrincipal,
    subject: Subject,
    eff: Access,
    ctx: Context,
    key_arn: str,
    scp: Levels | None,
    rcp: Levels | None,
) -> Access:
    """The key policy's verdict `eff` ∧ identity policy ∧ boundary ∧ SCPs ∧ RCPs (SPEC §2.1)."""
    eff = eff.both(evaluate_statements(cp.statements, subject, ctx, "iam-policy", key_arn))
    if cp.boundary is not None and eff.any:
        eff = eff.both(evaluate_statements(cp.boundary, subject, ctx, "permissions-boundary", key_arn))
    for source, levels in (("scp", scp), ("rcp", rcp)):
        if levels and eff.any:
            org_access = evaluate_levels(levels, subject, ctx, source, key_arn)
            if org_access is not None:
                eff = eff.both(org_access)
    return eff


def _invariant(groups: Iterable[tuple[Statement, ...]]) -> bool:
    return all(stmt.subject_only for group in groups for stmt in group)


def _resource_signature(
    cp: CompiledPrincipal, scp: Levels | None, rcp: Levels | None, key_arn: str, seen: dict[str, bool]
) -> tuple[bool, ...]:
    """Which of the statements involved name this key in their Resource."""
    groups = (cp.statements, cp.boundary or (), *(scp or ()), *(rcp or ()))
    return tuple([resource_matches(s, key_arn, seen) for group in groups for s in group])


def _issuing_account(text: str) -> str:
    """`IssuingAccount` of a grant: an account id, or its root ARN as ListGrants prints it."""
    return text if ACCOUNT_RE.match(text) else arn_account(text)


def _service_grant_lint(key: KeyRecord, grant: Grant, reported: bool) -> Lint:
    issuer = "the key's own account" if reported else "the key's own account (no IssuingAccount was reported)"
    return Lint(
        "service-grant",
        f"grant {grant.grant_id} lets {grant.grantee_principal} use the key for {issuer}: "
        f"{', '.join(grant.operations) or 'no operations'}; not cross-account access",
        key_arn=key.arn,
        account=key.account,
        principal=grant.grantee_principal,
    )


def _raw_text(policy: Any) -> str | None:
    if policy is None or isinstance(policy, str):
        return policy
    try:
        return json.dumps(policy, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(policy)


def evaluate_key(
    key: KeyRecord, scope: AuditScope, trace: Trace | None = None
) -> tuple[list[Finding], list[Lint], int, str | None]:
    """Every external principal's access to one key, the key's lints, the decisions made, and
    the canonical text of its policy (the raw text if it is not one; None if none was read).
    `trace`: filled with whom each finding was decided for (evaluator/explain.py; None in scans)."""
    out = KeyFindings(key, scope, trace)
    lints: list[Lint] = []
    decisions = 0
    extra: list[Finding] = []
    canonical = None if key.unreadable else _raw_text(key.policy)
    try:
        if key.policy is None or key.unreadable:  # never decided from half a key's data
            raise PolicyParseError("; ".join(key.errors) or "no key policy was collected")
        policy = parse_policy(key.policy)
        canonical = policy.canonical or canonical
        stmts = tuple(s for s in policy.statements if resource_matches(s, key.arn))
        lints.extend(key_policy_lints(key, policy))
    except PolicyParseError as exc:
        extra.append(_unparseable(key, str(exc)))
        stmts = ()
    resource = resource_context(key, scope)
    tags = {k.lower(): v for k, v in key.tags} if key.tags else _NO_TAGS
    index = KeyPolicyIndex(stmts)

    memo = scope.key_verdicts if index.subject_only else None

    def key_side(subject: Subject) -> Access:
        return verdict(index.statements_for(subject.kind, subject.account), subject)

    def verdict(relevant: tuple[Statement, ...], subject: Subject) -> Access:
        if memo is None:
            return evaluate_statements(relevant, subject, Context(subject.context, resource, tags), "key-policy")
        # The same statements (interned: compared by identity) decide alike for a subject on
        # every key, and keys of one estate share most of their statements.
        marker = (relevant, id(subject))
        found = memo.get(marker)
        if found is None:
            ctx = Context(subject.context, resource, tags)
            found = memo[marker] = evaluate_statements(relevant, subject, ctx, "key-policy")
        return found

    # Potential: every external principal the key policy names (SPEC §3).
    named: dict[str, Subject] = {}
    wanted: dict[str, None] = {}  # service principals
    wildcard = False
    own_account = frozenset((key.account,))
    for stmt in stmts:
        pset = stmt.principals
        if not stmt.allow or pset is None:
            continue
        if pset.any or stmt.not_principal:
            wildcard = True
            if stmt.service_keys:
                wanted["*"] = None  # "*" admits services too: are they confined? (SPEC §2.11)
            if stmt.not_principal:
                continue
        if pset.services:
            wanted.update(dict.fromkeys(pset.services))
        if not pset.others and pset.mentioned <= own_account:
            continue  # names only the key's own account and its principals
        for ref in pset.refs:
            if ref.kind == "account" and ref.account != key.account:
                named.setdefault(ref.value, account_subject(ref.account, scope, ref.value.split(":")[1]))
            elif ref.kind in _NAMED_KINDS and ref.account != key.account:
                named.setdefault(ref.value, named_subject(ref, scope))
    if wildcard:
        # Public: what an outsider of the attacker's choosing gets (SPEC §3); and what members of
        # an organization the policy names but nobody audits may get (potential "*").
        decisions += 1
        public = other_org = NO_ACCESS
        for subject, unknown_org in outsider_subjects(index.wild, key, scope):
            if subject.account in index.by_account:
                continue  # a statement names that account: not an outsider after all
            if unknown_org:
                other_org = other_org.either(verdict(index.wild, subject))
            else:
                public = public.either(verdict(index.wild, subject))
            if trace is not None:
                out.note("*", "potential" if unknown_org else "public", "*", ("key", subject))
        public = public.restrict(CROSS_ACCOUNT_MASK)
        out.add("*", "*", "public", public, VIA_KEY_POLICY)
        out.add("*", "*", "potential", other_org.restrict(CROSS_ACCOUNT_MASK & ~public.any), VIA_KEY_POLICY)
        for name, subject in confined_subjects(stmts, scope).items():
            if subject.account != key.account:
                named.setdefault(name, subject)
    for name, subject in named.items():
        decisions += 1
        account = subject.account if subject.account else "*"
        out.add(name, account, "potential", key_side(subject), VIA_KEY_POLICY)
        if trace is not None:
            out.note(name, "potential", account, ("key", subject))
    for service in wanted:
        decisions += services(service, key, index, scope, out, lints, verdict)

    # Effective: concrete principals of audited accounts, key policy ∧ IAM ∧ no Deny.
    named_accounts = {s.account for s in named.values() if s.kind == "concrete"}
    rcp = scope.rcps.get(key.account)
    rcp_invariant = rcp is None or _invariant(rcp)
    seen: dict[str, bool] = {}  # Resource wildcard -> matches this key
    # Accounts no statement names can only be reached through the `"*"` statements, and keys
    # share those: which accounts they reach is worked out once per distinct set of them.
    reach = None
    if memo is not None:
        reach = scope.wild_reach.get(index.wild)
        if reach is None:
            reach = scope.wild_reach[index.wild] = frozenset(
                a for a in scope.iam if index.wild and verdict(index.wild, account_subject(a, scope)).any
            )
    for account, iam in scope.iam.items():
        if account == key.account:
            continue
        if reach is not None and account not in index.by_account and account not in named_accounts:
            if account not in reach:
                continue
        elif not index.statements_for("concrete", account) or (
            account not in named_accounts and not key_side(account_subject(account, scope)).any
        ):
            continue  # nothing in this account can be given this key
        scp = scope.scps.get(account)
        # One key-policy verdict for the principals no statement singles out — one for those
        # with a permissions boundary, one for the rest (a Deny's NotPrincipal, SPEC §2.9).
        shared_by: dict[bool, Access] = {}
        generic, named_arns, named_roles = index.generic(account)
        for cp in iam.candidates(key.arn, seen):
            subject = concrete_subject(cp)
            decisions += 1
            if not generic or subject.arn in named_arns or (subject.role_name and subject.role_name in named_roles):
                eff = key_side(subject).restrict(CROSS_ACCOUNT_MASK)
                if eff.any:
                    ctx = Context(subject.context, resource, tags)
                    eff = _identity_side(cp, subject, eff, ctx, key.arn, scp, rcp)
                    out.add(cp.source.arn, account, "effective", eff, VIA_IAM)
                    if trace is not None:
                        out.note(cp.source.arn, "effective", account, ("iam", subject, cp, scp, rcp))
                continue
            shared = shared_by.get(subject.bounded)
            if shared is None:
                shared = shared_by[subject.bounded] = scope.intern(key_side(subject).restrict(CROSS_ACCOUNT_MASK))
            if not shared.any:
                continue
            if cp.invariant is None:
                cp.invariant = _invariant((cp.statements, cp.boundary or (), *(scp or ())))
            if cp.invariant and rcp_invariant:
                # The same key-policy verdict and the same Resource matches as on an earlier key:
                # the same answer (every statement involved decides by the principal alone).
                memo_key = (id(shared), id(rcp), _resource_signature(cp, scp, rcp, key.arn, seen))
                found = cp.memo.get(memo_key)
                if found is None:
                    ctx = Context(subject.context, resource, tags)
                    found = cp.memo[memo_key] = _identity_side(cp, subject, shared, ctx, key.arn, scp, rcp)
                eff = found
            else:
                ctx = Context(subject.context, resource, tags)
                eff = _identity_side(cp, subject, shared, ctx, key.arn, scp, rcp)
            out.add(cp.source.arn, account, "effective", eff, VIA_IAM)
            if trace is not None:
                out.note(cp.source.arn, "effective", account, ("iam", subject, cp, scp, rcp))

    # Grants: direct access for the grantee, no policy needed (SPEC §2.8).
    for grant in () if key.unreadable else key.grants:
        grantee = grant.grantee_principal or ""
        if is_service_principal(grantee):
            # The service acts for the account that issued the grant (SPEC §2.8).
            issuer = _issuing_account(grant.issuing_account) or key.account
            if issuer == key.account:
                lints.append(_service_grant_lint(key, grant, bool(grant.issuing_account)))
                continue
            subject = service_subject(grantee, issuer, scope)
            principal, account = grantee, issuer
        else:
            account = grantee if ACCOUNT_RE.match(grantee) else arn_account(grantee)
            if account == key.account:
                continue
            principal = root_arn(account) if ACCOUNT_RE.match(grantee) else grantee
            subject = grantee_subject(principal, scope)
        decisions += 1
        acc = _grant_access(grant.grant_id, grant_operations_mask(grant.operations), grant.constraints)
        ctx = Context(subject.context, resource, tags)
        acc = apply_denies(acc, index.statements_for(subject.kind, subject.account), subject, ctx, "key-policy")
        grantee_iam = scope.principal(principal)
        if grantee_iam is not None:
            own = tuple(s for s in grantee_iam.statements if resource_matches(s, key.arn))
            acc = apply_denies(acc, own, subject, ctx, "iam-policy")
        out.add(principal, account or "*", "effective", acc, VIA_GRANT)
        if trace is not None:
            out.note(principal, "effective", account or "*", ("grant", subject, grant, grantee_iam))
    return extra + out.findings(), lints, decisions, canonical


def evaluate_keys(keys: Iterable[KeyRecord], scope: AuditScope) -> Evaluation:
    """Every key of the estate (SPEC §2–§4), the garbage collector paused (kmsaudit/gcpause.py)."""
    with gc_paused():
        findings: list[Finding] = []
        lints: list[Lint] = list(scope.lints)
        decisions = 0
        policies: list[tuple[str, str | None]] = []
        for key in keys:
            f, lint, n, canonical = evaluate_key(key, scope)
            findings.extend(f)
            lints.extend(lint)
            decisions += n
            policies.append((key.arn, canonical))
        return Evaluation(tuple(findings), tuple(lints), decisions, tuple(policies))
