"""The audited estate, compiled once: IAM principals indexed by the keys they can name.

For each key only the principals whose identity policies can name it (by exact ARN or by a
wildcard pattern that matches) are evaluated, so cost follows the findings, not the
product keys × principals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kmsaudit.evaluator.access import Access, Subject
from kmsaudit.evaluator.actions import CROSS_ACCOUNT_MASK, pattern_mask
from kmsaudit.evaluator.conditions import CALLER, TAGS_KNOWN, Excluded, Value
from kmsaudit.evaluator.match import match_once
from kmsaudit.evaluator.memo import Memo
from kmsaudit.evaluator.policy import PolicyParseError, parse_policy
from kmsaudit.evaluator.statements import Statement
from kmsaudit.model import IamPrincipal, Lint, Organization


@dataclass(slots=True)
class CompiledPrincipal:
    source: IamPrincipal
    statements: tuple[Statement, ...]  # identity statements that mention a KMS action
    boundary: tuple[Statement, ...] | None
    context: dict[str, Value]
    subject: Subject | None = None  # made once (subjects.concrete_subject), with its verdict cache
    # Do all its statements (and its account's SCPs) decide by the principal alone? (decide.py)
    invariant: bool | None = None
    # (key-policy verdict, RCPs, Resource matches) -> effective access (decide.py)
    memo: dict[tuple[int, int, tuple[bool, ...]], Access] = field(default_factory=dict)


@dataclass(slots=True)
class AccountIam:
    """One audited account's principals, indexed by the Resource patterns of their Allows."""

    principals: list[CompiledPrincipal] = field(default_factory=list)
    exact: dict[str, list[CompiledPrincipal]] = field(default_factory=dict)
    patterns: dict[str, list[CompiledPrincipal]] = field(default_factory=dict)
    always: list[CompiledPrincipal] = field(default_factory=list)  # NotResource / no Resource

    def add(self, principal: CompiledPrincipal) -> None:
        self.principals.append(principal)
        keys: set[tuple[str, str]] = set()
        for stmt in principal.statements:
            if not stmt.allow or not stmt.action_mask & CROSS_ACCOUNT_MASK:
                continue
            if stmt.resources is None or stmt.not_resource:
                keys.add(("always", ""))
                continue
            for pattern in stmt.resources:
                kind = "pattern" if ("*" in pattern or "?" in pattern) else "exact"
                keys.add((kind, pattern))
        for kind, pattern in keys:
            if kind == "always":
                self.always.append(principal)
            elif kind == "exact":
                self.exact.setdefault(pattern, []).append(principal)
            else:
                self.patterns.setdefault(pattern, []).append(principal)

    def candidates(self, key_arn: str, seen: dict[str, bool]) -> list[CompiledPrincipal]:
        """Principals with an Allow whose Resource can match the key (the rest have no access).

        `seen`: wildcard results for this key so far, shared with `resource_matches`."""
        found: dict[int, CompiledPrincipal] = {id(p): p for p in self.always}
        for p in self.exact.get(key_arn, ()):
            found[id(p)] = p
        for pattern, principals in self.patterns.items():
            if match_once(seen, pattern, key_arn):
                for p in principals:
                    found[id(p)] = p
        return list(found.values())


def org_context(account: str, org: Organization | None) -> dict[str, Value]:
    """`aws:PrincipalOrgID`/`OrgPaths` of an account: known, or known not to be ours."""
    if org is None:
        return {}
    if account in org.accounts:
        ctx: dict[str, Value] = {"aws:principalorgid": (org.org_id,)}
        if account in org.org_paths:
            ctx["aws:principalorgpaths"] = (org.org_paths[account],)
        return ctx
    return {"aws:principalorgid": Excluded(frozenset({org.org_id}), may_be_absent=True)}


def _statements(doc: Any, what: str, lints: list[Lint], account: str) -> tuple[Statement, ...]:
    try:
        policy = parse_policy(doc)
    except PolicyParseError as exc:
        lints.append(Lint("unparseable-iam-policy", f"{what}: {exc}", account=account, policy=what))
        return ()
    return policy.statements


def _compile_levels(
    levels: tuple[tuple[Any, ...], ...], what: str, lints: list[Lint], account: str
) -> tuple[tuple[Statement, ...], ...]:
    return tuple(tuple(s for doc in level for s in _statements(doc, what, lints, account)) for level in levels)


class AuditScope:
    """The accounts audited and trusted, their IAM, and the organization (SPEC §3 zone)."""

    def __init__(
        self,
        principals: Iterable[IamPrincipal] = (),
        *,
        audited_accounts: Iterable[str] = (),
        trusted_accounts: Iterable[str] = (),
        organization: Organization | None = None,
    ) -> None:
        self.organization = organization
        self.lints: list[Lint] = []
        self._linted: set[tuple[str, str, str]] = set()
        self.iam: dict[str, AccountIam] = {}
        self._by_arn: dict[str, CompiledPrincipal] | None = None
        # Subjects asked about on more than one key, made once so their verdicts are cached
        # (evaluator/subjects.py: account, outsider and named subjects).
        self.subjects: dict[tuple[str, str, str], Subject] = {}
        # Finding conditions as dicts, per distinct condition tuple (findings.KeyFindings).
        self.condition_dicts = Memo(200_000)
        self._interned: dict[Access, Access] = {}
        # (key-policy statements, id(subject)) -> verdict, across keys (decide.evaluate_key).
        self.key_verdicts = Memo(200_000)
        # a key's properties -> its condition context (subjects.resource_context)
        self.resource_contexts: dict[tuple[Any, ...], dict[str, Value]] = {}
        # a key policy's `"*"` statements -> the audited accounts they give anything to (one
        # entry per distinct set of such statements: few in an estate)
        self.wild_reach: dict[tuple[Statement, ...], frozenset[str]] = {}
        # (id(verdict), account, access, via) -> (verdict, the finding fields it decides)
        self.finding_tails = Memo(200_000)
        # ("*" statements, key account, partition, service) -> the outsiders they are asked about
        # (subjects.outsider_subjects: SPEC §3, §2.11)
        self.outsiders: dict[tuple[Any, ...], tuple[tuple[Subject, bool], ...]] = {}
        # statement -> the accounts its aws:Source* conditions name (decide._service_accounts)
        self.service_accounts: dict[Statement, frozenset[str]] = {}
        audited = set(audited_accounts)
        for principal in principals:
            audited.add(principal.account)
            self.iam.setdefault(principal.account, AccountIam()).add(self._compile(principal))
        self.audited = frozenset(audited)
        org_accounts = organization.accounts if organization else frozenset()
        self.trusted = frozenset(audited | set(trusted_accounts) | set(org_accounts))
        self.scps: dict[str, tuple[tuple[Statement, ...], ...]] = {}
        self.rcps: dict[str, tuple[tuple[Statement, ...], ...]] = {}
        if organization:
            for account, levels in organization.scps.items():
                self.scps[account] = _compile_levels(levels, "scp", self.lints, account)
            for account, levels in organization.rcps.items():
                self.rcps[account] = _compile_levels(levels, "rcp", self.lints, account)

    def intern(self, access: Access) -> Access:
        """One object per distinct verdict, kept for the scope's life (its id keys caches)."""
        return self._interned.setdefault(access, access)

    def _compile(self, principal: IamPrincipal) -> CompiledPrincipal:
        statements: list[Statement] = []
        for doc in principal.policies:
            for stmt in _statements(doc.document, doc.name, self.lints, principal.account):
                if stmt.action_mask:
                    statements.append(stmt)
                    self._lint_resource_star(principal, doc.name, stmt)
        boundary = None
        if principal.boundary is not None:
            boundary = _statements(principal.boundary.document, principal.boundary.name, self.lints, principal.account)
        for arn in principal.unresolved:
            self.lints.append(
                Lint(
                    "unresolved-managed-policy",
                    f"{principal.arn} has managed policy {arn} that was not in the collected details",
                    account=principal.account,
                    principal=principal.arn,
                    policy=arn,
                )
            )
        kind_type = "User" if principal.kind == "user" else "AssumedRole"
        context: dict[str, Value] = {
            "aws:principalaccount": (principal.account,),
            "kms:calleraccount": (principal.account,),
            "aws:principalarn": (principal.arn,),
            "aws:principaltype": (kind_type,),
            "aws:principalisawsservice": ("false",),
            # What the table of condition keys needs to decide the keys not given (SPEC §2.7).
            CALLER: (principal.kind,),
        }
        if principal.kind == "user":
            # A user's tags are all in its authorization details. A role's are not: a session
            # may carry session tags that override them (IAM User Guide, "Passing session tags").
            context[TAGS_KNOWN] = ("true",)
            for tag_key, tag_value in principal.tags:
                context["aws:principaltag/" + tag_key.lower()] = (tag_value,)
        if principal.kind == "user":
            context["aws:username"] = (principal.name,)
        context.update(org_context(principal.account, self.organization))
        return CompiledPrincipal(principal, tuple(statements), boundary, context)

    def _lint_resource_star(self, principal: IamPrincipal, policy: str, stmt: Statement) -> None:
        # 000_…txt: "always list the specific CMK ARNs in the policy's Resource element".
        if stmt.allow and stmt.resources is not None and not stmt.not_resource and "*" in stmt.resources:
            shared = "arn:" in policy or policy.startswith("group:")
            marker = (
                principal.account,
                policy if shared else f"{principal.arn} {policy}",
                stmt.sid + ",".join(stmt.action_patterns),
            )
            if marker in self._linted:
                return
            if any(pattern_mask(p) for p in stmt.action_patterns) and not stmt.not_action:
                self._linted.add(marker)
                self.lints.append(
                    Lint(
                        "iam-kms-resource-star",
                        f'{policy} allows KMS actions on Resource "*": every key that trusts the '
                        "account, in any account, is usable by this principal",
                        account=principal.account,
                        principal=principal.arn,
                        policy=policy,
                        sid=stmt.sid,
                    )
                )

    def principal(self, arn: str) -> CompiledPrincipal | None:
        """The audited user or role with this ARN, if any."""
        if self._by_arn is None:
            self._by_arn = {p.source.arn: p for iam in self.iam.values() for p in iam.principals}
        return self._by_arn.get(arn)

    def zone(self, account: str) -> str:
        return "trusted" if account in self.trusted else "external"
