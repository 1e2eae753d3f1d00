"""The outsider of SPEC §3: somebody nobody named, who picks whatever identity a policy admits.

`public` is decided against a principal in an account outside the audited accounts, the trust
accounts and the audited organization, with any account id, user or role name and path, tags,
and an organization of its own or none. A statement such a principal can satisfy is public,
whatever condition keys it names. Rather than reason about each condition key alone (which
cannot tell `role/backup-*` allowed and `role/backup-*` denied from `role/admin-*` denied), the
evaluator asks a few concrete outsiders: identities built from the patterns the statements
themselves contain (`witness.intersect`), a fresh one that matches as little as possible, and
the combinations of those. The identity keys of one candidate agree with each other (the account
in its ARN is its `aws:PrincipalAccount` and `kms:CallerAccount`); request keys (`kms:ViaService`,
`aws:SourceIp`…) stay undecided, so they make the access conditional, never less than public.

An AWS service principal is asked about the same way, as the service acting for an outsider's
resource (SPEC §2.11): `aws:SourceAccount`, `aws:SourceArn`, `aws:SourceOrgID` are then the
outsider's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from kmsaudit.evaluator.candidates import (
    FRESH_NAME,
    MAX_CANDIDATES,
    PRINCIPAL,
    SERVICE,
    Patterns,
    TooMany,
    accounts,
    arn_tails,
    fresh_account,
    orgs,
    relevant,
    tags,
)
from kmsaudit.evaluator.conditions import CALLER, SOME_VALUE, Excluded, Value
from kmsaudit.evaluator.statements import Statement

_PRINCIPAL_TYPES = {"role": "AssumedRole", "user": "User", "root": "Account", "federated-user": "FederatedUser"}
_CALLERS = {"role": "role", "user": "user", "root": "root", "federated-user": "federated"}


@dataclass(frozen=True, slots=True)
class Outsider:
    """One candidate: its condition context, and whether it stands for an unknown organization's
    members (a `potential` finding, not `public`: SPEC §3, "confined to an organization whose
    accounts are not known")."""

    account: str
    arn: str
    context: dict[str, Value]
    other_org: bool = False


def signature(statements: tuple[Statement, ...], service: str = "") -> frozenset[object]:
    """What of `statements` the candidates depend on: the accounts their principals name and
    their conditions on the keys an outsider chooses, in any order. Equal signatures, equal
    candidates (in another order, which changes no verdict: their access is OR-ed)."""
    keys = SERVICE if service else PRINCIPAL
    return frozenset(
        (
            s.principals.mentioned if s.principals is not None else frozenset(),
            tuple(c for c in s.conditions if relevant(c.key_lc, keys)),
        )
        for s in statements
    )


def outsiders(
    statements: tuple[Statement, ...],
    excluded: frozenset[str],
    our_org: str | None,
    partition: str = "aws",
    service: str = "",
) -> tuple[Outsider, ...]:
    """The candidates to ask `statements` about: principals, or `service` acting for a resource
    of theirs. `excluded`: the zone of trust and the key's account (never an outsider's)."""
    keys = SERVICE if service else PRINCIPAL
    p = Patterns(statements, keys)
    excluded = excluded | frozenset(p.named_accounts)
    if p.empty:
        account = fresh_account([], excluded)
        arn = f"arn:{partition}:logs:us-east-1:{account}:log-group:{FRESH_NAME}" if service else ""
        arn = arn or f"arn:{partition}:iam::{account}:role/{FRESH_NAME}"
        return (Outsider(account, arn, _context(service, account, arn, None, None, ())),)
    other_org = bool(p.named_orgs - ({our_org} if our_org else set()))
    try:
        tails, arn_accounts = arn_tails(p, partition, bool(service))
        account_list = accounts(p, excluded, arn_accounts)
        org_list = orgs(p, our_org)
        tag_sets = tags(p)
        too_many = len(account_list) * len(tails) * (len(org_list) + other_org) * len(tag_sets) > MAX_CANDIDATES
    except TooMany:
        too_many = True
    if too_many:
        # Too many to try: leave every identity key undecided. Never less than the truth (public,
        # conditional, with the identity conditions listed), only less precise.
        undecided: dict[str, Value] = (
            {"aws:principalisawsservice": ("true",), "aws:principalservicename": (service,), CALLER: ("service",)}
            if service
            else {"aws:principalisawsservice": ("false",)}
        )
        return (Outsider(fresh_account([], excluded), "", undecided),)
    found: list[Outsider] = []
    for account, (head, resource), tag_set in itertools.product(account_list, tails, tag_sets):
        arn = f"{head}:{account}:{resource}"
        for org, path in org_list:
            found.append(Outsider(account, arn, _context(service, account, arn, org, path, tag_set)))
        if other_org:
            ctx = _context(service, account, arn, None, None, tag_set)
            ctx[keys.org] = Excluded(frozenset({our_org}) if our_org else frozenset())
            del ctx[keys.path]  # unknown: whatever path the unknown organization gives it
            found.append(Outsider(account, arn, ctx, other_org=True))
    return tuple(found)


def service_context(service: str, account: str, source_arn: Value, org_id: Value, org_paths: Value) -> dict[str, Value]:
    """An AWS service calling for a resource of `account` (SPEC §2.11): no principal account, ARN
    or organization of its own; the source's account, ARN and organization instead."""
    return {
        CALLER: ("service",),
        "aws:principalisawsservice": ("true",),
        # "*": any service, whichever name a condition asks for (present, its value not known).
        "aws:principalservicename": (service,) if service != "*" else SOME_VALUE,
        "aws:principalaccount": None,
        "aws:principalarn": None,
        "aws:principalorgid": None,
        "kms:calleraccount": (account,),
        "aws:sourceaccount": (account,),
        "aws:sourcearn": source_arn,
        "aws:sourceorgid": org_id,
        "aws:sourceorgpaths": org_paths,
    }


def _context(
    service: str,
    account: str,
    arn: str,
    org: str | None,
    path: str | None,
    tags: tuple[tuple[str, str | None], ...],
) -> dict[str, Value]:
    org_value: Value = (org,) if org else None
    path_value: Value = (path,) if path else None
    if service:
        return service_context(service, account, (arn,), org_value, path_value)
    resource = arn.split(":", 5)[5]
    kind = resource.split("/", 1)[0]
    context: dict[str, Value] = {
        "aws:principalaccount": (account,),
        "kms:calleraccount": (account,),
        "aws:principalarn": (arn,),
        "aws:principaltype": (_PRINCIPAL_TYPES.get(kind, "AssumedRole"),),
        "aws:principalisawsservice": ("false",),
        "aws:principalorgid": org_value,
        "aws:principalorgpaths": path_value,
        CALLER: (_CALLERS.get(kind, "role"),),
    }
    if kind == "user":
        context["aws:username"] = (resource.rsplit("/", 1)[-1],)
    for key, value in tags:
        context[key] = (value,) if value is not None else None
    return context


def is_service_principal(principal: str) -> bool:
    """`rds.us-east-1.amazonaws.com`, `logs.amazonaws.com`: an AWS service, not an account."""
    return principal.endswith((".amazonaws.com", ".amazonaws.com.cn")) and ":" not in principal


__all__ = ["Outsider", "is_service_principal", "outsiders"]
