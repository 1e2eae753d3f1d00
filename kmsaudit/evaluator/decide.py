"""Key policy ∧ IAM ∧ no Deny — or a grant — into findings (SPEC §2–§4)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from kmsaudit.evaluator.access import (
    NO_ACCESS,
    Access,
    Conditions,
    Subject,
    apply_denies,
    evaluate_levels,
    evaluate_statements,
    resource_matches,
)
from kmsaudit.evaluator.actions import CROSS_ACCOUNT_MASK, grant_operations_mask, names
from kmsaudit.evaluator.conditions import IDENTITY_KEYS, ArnInAccount, Context, Excluded, Value
from kmsaudit.evaluator.keyindex import KeyPolicyIndex
from kmsaudit.evaluator.lints import key_policy_lints
from kmsaudit.evaluator.match import ACCOUNT_RE, PrincipalRef, arn_account, parse_principal, root_arn
from kmsaudit.evaluator.outsider import DIRECT_CALLER, is_service_principal, outsiders, signature
from kmsaudit.evaluator.policy import PolicyParseError, Statement, parse_policy
from kmsaudit.evaluator.scope import AuditScope, CompiledPrincipal, org_context
from kmsaudit.gcpause import gc_paused
from kmsaudit.model import Evaluation, Finding, Grant, KeyRecord, Lint

__all__ = ["AuditScope", "evaluate_key", "evaluate_keys"]

# principal_account … conditional_actions: the fields of a Finding after key and principal
Tail = tuple[
    str, str, str, tuple[str, ...], tuple[str, ...], bool, tuple[dict[str, Any], ...], str, str, tuple[str, ...]
]
VIA_KEY_POLICY = ("key-policy",)
VIA_IAM = ("iam-policy", "key-policy")
VIA_GRANT = ("grant",)
_NAMED_KINDS = frozenset({"iam", "session", "federated", "canonical"})
_PRINCIPAL_TYPES = {"user": "User", "role": "AssumedRole", "federated-user": "FederatedUser"}


_NO_TAGS: dict[str, str] = {}


def _resource_context(key: KeyRecord, scope: AuditScope) -> dict[str, Value]:
    """Keys known from the key itself (SPEC §2.7): account, aliases, spec, region.

    Read-only, and shared by the keys with the same properties."""
    marker = (key.account, key.region, key.aliases, key.key_spec, key.key_usage, key.origin, key.multi_region)
    found = scope.resource_contexts.get(marker)
    if found is None:
        found = scope.resource_contexts[marker] = _make_resource_context(key)
    return found


def _make_resource_context(key: KeyRecord) -> dict[str, Value]:
    ctx: dict[str, Value] = {
        "aws:resourceaccount": (key.account,),
        "aws:requestedregion": (key.region,),
        "kms:resourcealiases": tuple(key.aliases) or None,
    }
    for cond_key, value in (
        ("kms:keyspec", key.key_spec),
        ("kms:keyusage", key.key_usage),
        ("kms:keyorigin", key.origin),
    ):
        if value:
            ctx[cond_key] = (value,)
    if key.multi_region is not None:
        ctx["kms:multiregion"] = ("true" if key.multi_region else "false",)
    return ctx


def _made_once(scope: AuditScope, marker: tuple[str, str, str], make: Callable[[], Subject]) -> Subject:
    """Subjects are made once per scope: their verdict caches then serve every key."""
    found = scope.subjects.get(marker)
    if found is None:
        found = scope.subjects[marker] = make()
    return found


def account_subject(account: str, scope: AuditScope, partition: str = "aws") -> Subject:
    """Any principal of `account`: what its administrators could delegate (potential)."""
    return _made_once(scope, ("account", account, partition), lambda: _account_subject(account, scope, partition))


def _account_subject(account: str, scope: AuditScope, partition: str) -> Subject:
    context: dict[str, Value] = {
        "aws:principalaccount": (account,),
        "kms:calleraccount": (account,),
        "aws:principalarn": ArnInAccount(account),
        "aws:principaltype": Excluded(frozenset()),  # present in every request; which, unknown
        "aws:principalisawsservice": ("false",),
        **DIRECT_CALLER,
    }
    context.update(org_context(account, scope.organization))
    return Subject("account", root_arn(account, partition), account, context=context)


def outsider_subjects(
    stmts: tuple[Statement, ...], key: KeyRecord, scope: AuditScope, service: str = ""
) -> tuple[tuple[Subject, bool], ...]:
    """SPEC §3's outsider (or §2.11's service acting for one): the candidates `stmts` are asked
    about, each with whether it stands for an unknown organization's members. Made once per
    distinct set of statements, so their verdicts are cached like any subject's."""
    partition = key.arn.split(":")[1] if key.arn.count(":") >= 5 else "aws"
    marker = (stmts, key.account, partition, service)
    found = scope.outsiders.get(marker)
    if found is None:
        # Statement sets that differ only in what no outsider can choose (kms:ViaService, the
        # key's own conditions…) share their candidates, and so their verdict caches.
        alike = (signature(stmts, service), key.account, partition, service)
        found = scope.outsiders.get(alike)
        if found is None:
            org = scope.organization.org_id if scope.organization else None
            excluded = scope.trusted | {key.account}
            found = scope.outsiders[alike] = tuple(
                (
                    Subject(
                        "service" if service else "outsider", service or "*", o.account, arn=o.arn, context=o.context
                    ),
                    o.other_org,
                )
                for o in outsiders(stmts, excluded, org, partition, service)
            )
        scope.outsiders[marker] = found
    return found


def service_subject(service: str, account: str, scope: AuditScope) -> Subject:
    """An AWS service acting for a resource of `account` (SPEC §2.11)."""
    return _made_once(scope, ("service", service, account), lambda: _service_subject(service, account, scope))


def _service_subject(service: str, account: str, scope: AuditScope) -> Subject:
    org = org_context(account, scope.organization)
    context: dict[str, Value] = {
        "aws:principalisawsservice": ("true",),
        "aws:principalservicename": (service,),
        "aws:principalaccount": None,
        "aws:principalarn": None,
        "aws:principalorgid": None,
        "kms:calleraccount": (account,),
        "aws:sourceaccount": (account,),
        "aws:sourcearn": ArnInAccount(account),
        "aws:sourceorgid": org.get("aws:principalorgid"),
        "aws:sourceorgpaths": org.get("aws:principalorgpaths"),
    }
    return Subject("service", service, account, context=context)


def named_subject(ref: PrincipalRef, scope: AuditScope) -> Subject:
    """A user, role or session named by ARN in the key policy."""
    return _made_once(scope, ("named", ref.kind, ref.value), lambda: _named_subject(ref, scope))


def _named_subject(ref: PrincipalRef, scope: AuditScope) -> Subject:
    if ref.kind in ("service", "federated", "canonical"):
        context: dict[str, Value] = {"aws:principalisawsservice": ("true" if ref.kind == "service" else "false",)}
        if ref.kind == "service":
            context.update({"aws:principalaccount": None, "aws:principalarn": None, "aws:principalorgid": None})
        return Subject(ref.kind, ref.value, ref.account, context=context)
    partition = ref.value.split(":", 2)[1]
    resource = ref.value.split(":", 5)[5]
    if ref.kind == "session":
        principal_arn = f"arn:{partition}:iam::{ref.account}:role/{ref.role_name}"
        ptype = "AssumedRole"
    else:
        principal_arn = ref.value
        ptype = _PRINCIPAL_TYPES.get(resource.split("/", 1)[0], "User")
    role_name = resource.rsplit("/", 1)[-1] if resource.startswith("role/") else ref.role_name
    context = {
        "aws:principalaccount": (ref.account,),
        "kms:calleraccount": (ref.account,),
        "aws:principalarn": (principal_arn,),
        "aws:principaltype": (ptype,),
        "aws:principalisawsservice": ("false",),
        **DIRECT_CALLER,
    }
    context.update(org_context(ref.account, scope.organization))
    return Subject("concrete", ref.value, ref.account, arn=ref.value, role_name=role_name, context=context)


def concrete_subject(cp: CompiledPrincipal) -> Subject:
    if cp.subject is None:
        p = cp.source
        role_name = p.name if p.kind == "role" else ""
        cp.subject = Subject("concrete", p.arn, p.account, arn=p.arn, role_name=role_name, context=cp.context)
    return cp.subject


class _Collector:
    """Findings of one key, merged per (principal, access level)."""

    def __init__(self, key: KeyRecord, scope: AuditScope) -> None:
        self.key, self.scope = key, scope
        # (principal, access, account): a service principal is reported once per account it acts for
        self.items: dict[tuple[str, str, str], tuple[str, Access, tuple[str, ...]]] = {}

    def add(self, principal: str, account: str, access: str, acc: Access, via: tuple[str, ...]) -> None:
        """`via`: sorted, as findings show it (VIA_KEY_POLICY, VIA_IAM, VIA_GRANT)."""
        acc = acc.restrict(CROSS_ACCOUNT_MASK)  # SPEC §2.3
        if not (acc.sure or acc.maybe):
            return
        slot = (principal, access, account)
        before = self.items.get(slot)
        if before is not None:
            _, merged, vias = before
            self.items[slot] = (account, merged.either(acc), tuple(sorted({*vias, *via})))
        else:
            self.items[slot] = (account, acc, via)

    def findings(self) -> list[Finding]:
        out = []
        key = self.key
        tails = self.scope.finding_tails
        for (principal, access, _), (account, acc, via) in self.items.items():
            # Verdicts are shared between keys (cached), and so is what a finding says of one.
            marker = (id(acc), account, access, via)
            entry = tails.get(marker)
            if entry is None or entry[0] is not acc:
                entry = tails[marker] = (acc, self._tail(account, access, acc, via))
            out.append(Finding(key.arn, key.account, key.region, principal, *entry[1]))
        return out

    def _tail(self, account: str, access: str, acc: Access, via: tuple[str, ...]) -> Tail:
        """A finding's fields after `principal`, as SPEC §4 orders them."""
        trusted = account in self.scope.trusted and access != "public" and account != "*"
        zone = "trusted" if trusted else "external"
        conditional = acc.sure == 0
        if zone == "trusted":
            severity = "low"
        elif access == "public":
            severity = "high" if conditional else "critical"
        else:
            severity = "medium" if conditional else "high"
        conditions = self._conditions(acc.conditions) if acc.conditions else ()
        actions = names(acc.sure | acc.maybe)
        return (account, access, zone, via, actions, conditional, conditions, severity, "access", names(acc.maybe))

    def _conditions(self, conds: Conditions) -> tuple[dict[str, Any], ...]:
        cache = self.scope.condition_dicts
        found = cache.get(conds)
        if found is None:
            dicts: list[dict[str, Any]] = []
            for _, desc in conds:
                as_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in desc}
                if as_dict not in dicts:
                    dicts.append(as_dict)
            found = cache[conds] = tuple(dicts)
        return found


def _confined_subjects(stmts: tuple[Statement, ...], scope: AuditScope) -> dict[str, Subject]:
    """Accounts and principals that identity conditions on a `"*"` Allow admit (SPEC §3)."""
    found: dict[str, Subject] = {}
    org = scope.organization
    for stmt in stmts:
        pset = stmt.principals
        if not stmt.allow or pset is None or not (pset.any or stmt.not_principal):
            continue
        for clause in stmt.conditions:
            if clause.key_lc not in IDENTITY_KEYS or clause.base.startswith(("stringnot", "arnnot")):
                continue
            for value in clause.values:
                if clause.key_lc in ("aws:principalaccount", "kms:calleraccount"):
                    if ACCOUNT_RE.match(value):
                        found.setdefault(root_arn(value), account_subject(value, scope))
                elif clause.key_lc == "aws:principalarn":
                    account = arn_account(value)
                    if not ACCOUNT_RE.match(account):
                        continue
                    resource = value.split(":", 5)[5]
                    if "*" in resource or "?" in resource or resource == "root":
                        found.setdefault(root_arn(account), account_subject(account, scope))
                    else:
                        ref = parse_principal({"AWS": value})[0]
                        if ref.kind in ("iam", "session"):
                            found.setdefault(ref.value, named_subject(ref, scope))
                elif org is not None and (value == org.org_id or value.startswith(org.org_id + "/")):
                    for account in org.accounts:
                        found.setdefault(root_arn(account), account_subject(account, scope))
    return found


def _grantee_subject(principal: str, scope: AuditScope) -> Subject:
    ref = parse_principal({"AWS": principal})[0]
    if ref.kind == "account":
        return account_subject(ref.account, scope, principal.split(":")[1])
    if ref.kind in ("iam", "session"):
        return named_subject(ref, scope)
    return named_subject(PrincipalRef("service", principal), scope)


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


def _service_accounts(stmt: Statement, scope: AuditScope) -> frozenset[str]:
    """Accounts an Allow's `aws:SourceAccount`/`aws:SourceArn`/`aws:SourceOrgID`/
    `kms:CallerAccount` conditions name: whom a confined service principal may act for (SPEC
    §2.11). Once per statement (statements are interned)."""
    found = scope.service_accounts.get(stmt)
    if found is not None:
        return found
    accounts: set[str] = set()
    org = scope.organization
    for clause in stmt.conditions if stmt.allow else ():
        if clause.base.startswith(("stringnot", "arnnot")):
            continue
        for value in clause.values:
            if clause.key_lc in ("aws:sourceaccount", "kms:calleraccount") and ACCOUNT_RE.match(value):
                accounts.add(value)
            elif clause.key_lc == "aws:sourcearn" and ACCOUNT_RE.match(arn_account(value)):
                accounts.add(arn_account(value))
            elif clause.key_lc in ("aws:sourceorgid", "aws:sourceorgpaths") and org is not None:
                if value == org.org_id or value.startswith(org.org_id + "/"):
                    accounts.update(org.accounts)
    found = scope.service_accounts[stmt] = frozenset(accounts)
    return found


def _services(
    service: str,
    key: KeyRecord,
    index: KeyPolicyIndex,
    scope: AuditScope,
    out: _Collector,
    lints: list[Lint],
    verdict: Callable[[tuple[Statement, ...], Subject], Access],
) -> int:
    """SPEC §2.11: a service principal confined to the key's own account is no cross-account
    access; confined to another account, that account's potential access; unconfined, anyone's
    (the confused deputy): a lint and a potential finding for "*". Returns decisions made."""
    if service == "*":
        stmts = index.wild
    else:  # the statements naming this service, and every Deny that may apply to it
        lowered = service.lower()
        stmts = tuple(s for s in index.others if not s.allow or (s.principals and lowered in s.principals.others))
    anyone = NO_ACCESS
    for subject, _ in outsider_subjects(stmts, key, scope, service):
        anyone = anyone.either(verdict(stmts, subject))
    anyone = anyone.restrict(CROSS_ACCOUNT_MASK)
    if anyone.any:
        lints.append(
            Lint(
                "service-principal-unconfined",
                f"{service if service != '*' else 'any AWS service'} may use this key for any account's resources: "
                "no aws:SourceAccount, aws:SourceArn or aws:SourceOrgID confines it (the confused deputy)",
                key_arn=key.arn,
                account=key.account,
                principal=service,
            )
        )
        out.add(service, "*", "potential", anyone, VIA_KEY_POLICY)
    decisions = 1
    accounts = {a for stmt in stmts for a in _service_accounts(stmt, scope)} - {key.account}
    for account in sorted(accounts):
        decisions += 1
        out.add(service, account, "potential", verdict(stmts, service_subject(service, account, scope)), VIA_KEY_POLICY)
    return decisions


def _raw_text(policy: Any) -> str | None:
    if policy is None or isinstance(policy, str):
        return policy
    try:
        return json.dumps(policy, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(policy)


def evaluate_key(key: KeyRecord, scope: AuditScope) -> tuple[list[Finding], list[Lint], int, str | None]:
    """Every external principal's access to one key, the key's lints, the decisions made, and
    the canonical text of its policy (the raw text if it is not one; None if none was read)."""
    out = _Collector(key, scope)
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
    resource = _resource_context(key, scope)
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
    services: dict[str, None] = {}
    wildcard = False
    own_account = frozenset((key.account,))
    for stmt in stmts:
        pset = stmt.principals
        if not stmt.allow or pset is None:
            continue
        if pset.any or stmt.not_principal:
            wildcard = True
            if stmt.service_keys:
                services["*"] = None  # "*" admits services too: are they confined? (SPEC §2.11)
            if stmt.not_principal:
                continue
        if pset.services:
            services.update(dict.fromkeys(pset.services))
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
        public = public.restrict(CROSS_ACCOUNT_MASK)
        out.add("*", "*", "public", public, VIA_KEY_POLICY)
        out.add("*", "*", "potential", other_org.restrict(CROSS_ACCOUNT_MASK & ~public.any), VIA_KEY_POLICY)
        for name, subject in _confined_subjects(stmts, scope).items():
            if subject.account != key.account:
                named.setdefault(name, subject)
    for name, subject in named.items():
        decisions += 1
        account = subject.account if subject.account else "*"
        out.add(name, account, "potential", key_side(subject), VIA_KEY_POLICY)
    for service in services:
        decisions += _services(service, key, index, scope, out, lints, verdict)

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
        shared: Access | None = None
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
                continue
            if shared is None:
                shared = scope.intern(key_side(subject).restrict(CROSS_ACCOUNT_MASK))
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
            subject = _grantee_subject(principal, scope)
        decisions += 1
        acc = _grant_access(grant.grant_id, grant_operations_mask(grant.operations), grant.constraints)
        ctx = Context(subject.context, resource, tags)
        acc = apply_denies(acc, index.statements_for(subject.kind, subject.account), subject, ctx, "key-policy")
        grantee_iam = scope.principal(principal)
        if grantee_iam is not None:
            own = tuple(s for s in grantee_iam.statements if resource_matches(s, key.arn))
            acc = apply_denies(acc, own, subject, ctx, "iam-policy")
        out.add(principal, account or "*", "effective", acc, VIA_GRANT)
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
