"""Who is asked about (SPEC §2–§3): the subjects a key policy's statements are evaluated for —
an account's any principal, a named user, role or session, an IAM principal of an audited
account, SPEC §3's outsider, an AWS service acting for an account (§2.11), a grantee — each
with the request context it brings, made once per scope so its verdict caches serve every key;
and the key's own context (§2.7)."""

from __future__ import annotations

from collections.abc import Callable

from kmsaudit.evaluator.access import Subject
from kmsaudit.evaluator.conditions import CALLER, IDENTITY_KEYS, ArnInAccount, Excluded, Value
from kmsaudit.evaluator.match import ACCOUNT_RE, PrincipalRef, arn_account, parse_principal, root_arn
from kmsaudit.evaluator.outsider import outsiders, service_context, signature
from kmsaudit.evaluator.scope import AuditScope, CompiledPrincipal, org_context
from kmsaudit.evaluator.statements import Statement
from kmsaudit.model import KeyRecord

_PRINCIPAL_TYPES = {"user": "User", "role": "AssumedRole", "federated-user": "FederatedUser"}


def resource_context(key: KeyRecord, scope: AuditScope) -> dict[str, Value]:
    """Keys known from the key itself (SPEC §2.7): account, aliases, spec, region.

    Read-only, and shared by the keys with the same properties."""
    marker = (key.account, key.region, key.aliases, key.key_spec, key.key_usage, key.origin, key.multi_region)
    found = scope.resource_contexts.get(marker)
    if found is None:
        found = scope.resource_contexts[marker] = _makeresource_context(key, scope)
    return found


def _makeresource_context(key: KeyRecord, scope: AuditScope) -> dict[str, Value]:
    ctx: dict[str, Value] = {
        "aws:resourceaccount": (key.account,),
        "aws:requestedregion": (key.region,),
        "kms:resourcealiases": tuple(key.aliases) or None,
    }
    org = scope.organization
    if org is not None and key.account in org.accounts:  # aws:ResourceOrgID: the key's account's organization
        ctx["aws:resourceorgid"] = (org.org_id,)
        if key.account in org.org_paths:
            ctx["aws:resourceorgpaths"] = (org.org_paths[key.account],)
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
        CALLER: ("any",),
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
    context = service_context(
        service, account, ArnInAccount(account), org.get("aws:principalorgid"), org.get("aws:principalorgpaths")
    )
    return Subject("service", service, account, context=context)


def named_subject(ref: PrincipalRef, scope: AuditScope) -> Subject:
    """A user, role or session named by ARN in the key policy."""
    return _made_once(scope, ("named", ref.kind, ref.value), lambda: _named_subject(ref, scope))


def _named_subject(ref: PrincipalRef, scope: AuditScope) -> Subject:
    if ref.kind in ("service", "federated", "canonical"):
        context: dict[str, Value] = {"aws:principalisawsservice": ("true" if ref.kind == "service" else "false",)}
        if ref.kind == "service":
            context.update({"aws:principalaccount": None, "aws:principalarn": None, "aws:principalorgid": None})
            context[CALLER] = ("service",)
        return Subject(ref.kind, ref.value, ref.account, context=context)
    partition = ref.value.split(":", 2)[1]
    resource = ref.value.split(":", 5)[5]
    if ref.kind == "session":
        principal_arn = f"arn:{partition}:iam::{ref.account}:role/{ref.role_name}"
        ptype = "AssumedRole"
    else:
        principal_arn = ref.value
        ptype = _PRINCIPAL_TYPES.get(resource.split("/", 1)[0], "User")
    caller = {"User": "user", "AssumedRole": "role", "FederatedUser": "federated"}[ptype]
    role_name = resource.rsplit("/", 1)[-1] if resource.startswith("role/") else ref.role_name
    context = {
        "aws:principalaccount": (ref.account,),
        "kms:calleraccount": (ref.account,),
        "aws:principalarn": (principal_arn,),
        "aws:principaltype": (ptype,),
        "aws:principalisawsservice": ("false",),
        CALLER: (caller,),
    }
    if caller == "user":
        context["aws:username"] = (resource.rsplit("/", 1)[-1],)
    context.update(org_context(ref.account, scope.organization))
    return Subject("concrete", ref.value, ref.account, arn=ref.value, role_name=role_name, context=context)


def concrete_subject(cp: CompiledPrincipal) -> Subject:
    if cp.subject is None:
        p = cp.source
        role_name = p.name if p.kind == "role" else ""
        cp.subject = Subject(
            "concrete",
            p.arn,
            p.account,
            arn=p.arn,
            role_name=role_name,
            context=cp.context,
            bounded=cp.boundary is not None,
        )
    return cp.subject


def confined_subjects(stmts: tuple[Statement, ...], scope: AuditScope) -> dict[str, Subject]:
    """Accounts and principals that identity conditions on a `"*"` statement admit (SPEC §3):
    an Allow's positive clauses, or a Deny's negated ones (`Deny` unless `aws:PrincipalAccount`
    is one of them: the accounts it spares)."""
    found: dict[str, Subject] = {}
    org = scope.organization
    for stmt in stmts:
        pset = stmt.principals
        if pset is None or not (pset.any or stmt.not_principal):
            continue
        for clause in stmt.conditions:
            negated = clause.base.startswith(("stringnot", "arnnot"))
            if clause.key_lc not in IDENTITY_KEYS or negated == stmt.allow:
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


def grantee_subject(principal: str, scope: AuditScope) -> Subject:
    ref = parse_principal({"AWS": principal})[0]
    if ref.kind == "account":
        return account_subject(ref.account, scope, principal.split(":")[1])
    if ref.kind in ("iam", "session"):
        return named_subject(ref, scope)
    return named_subject(PrincipalRef("service", principal), scope)
