"""Service principals in a key policy (SPEC §2.11): whom a service may act for, and the
confused deputy when nothing confines it. Called by decide.py for each service a key policy
admits."""

from __future__ import annotations

from collections.abc import Callable

from kmsaudit.evaluator.access import NO_ACCESS, Access, Subject
from kmsaudit.evaluator.actions import CROSS_ACCOUNT_MASK
from kmsaudit.evaluator.findings import KeyFindings
from kmsaudit.evaluator.keyindex import KeyPolicyIndex
from kmsaudit.evaluator.match import ACCOUNT_RE, arn_account
from kmsaudit.evaluator.scope import AuditScope
from kmsaudit.evaluator.statements import Statement
from kmsaudit.evaluator.subjects import outsider_subjects, service_subject
from kmsaudit.model import KeyRecord, Lint

VIA_KEY_POLICY = ("key-policy",)


def service_accounts(stmt: Statement, scope: AuditScope) -> frozenset[str]:
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


def services(
    service: str,
    key: KeyRecord,
    index: KeyPolicyIndex,
    scope: AuditScope,
    out: KeyFindings,
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
        if out.trace is not None:
            out.note(service, "potential", "*", ("key", subject))
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
    accounts = {a for stmt in stmts for a in service_accounts(stmt, scope)} - {key.account}
    for account in sorted(accounts):
        decisions += 1
        subject = service_subject(service, account, scope)
        out.add(service, account, "potential", verdict(stmts, subject), VIA_KEY_POLICY)
        if out.trace is not None:
            out.note(service, "potential", account, ("key", subject))
    return decisions
