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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kmsaudit.evaluator.conditions import Excluded, Value
from kmsaudit.evaluator.match import ACCOUNT_RE, wildcard_match
from kmsaudit.evaluator.policy import ConditionClause, Statement
from kmsaudit.evaluator.witness import ALL, One, Shape, Star, digits, glob, intersect, shape

FRESH_NAME = "kmsaudit-outsider"
FRESH_ORG = "o-kmsauditzz9"
# Candidate accounts for "an account nobody named": the one matching fewest account patterns wins.
FRESH_ACCOUNTS = ("000000000000", "999999999999", "505050505050", "373737373737", "818181818181")
MAX_CANDIDATES = 512  # more: every identity key is left undecided (public, conditional)
MAX_COMBINATIONS = 16  # value combinations tried per statement
MAX_PER_KIND = 24  # accounts, ARNs, organizations: more than this, and the product is too many anyway


class _TooMany(Exception):
    """More candidates than can be tried (a hostile or generated policy): decide less precisely."""


def _add(found: list[Any], item: Any) -> None:
    if item not in found:
        if len(found) >= MAX_PER_KIND:
            raise _TooMany
        found.append(item)


_POSITIVE = frozenset({"stringequals", "stringequalsignorecase", "stringlike", "arnequals", "arnlike"})
_NEGATED = frozenset({"stringnotequals", "stringnotequalsignorecase", "stringnotlike", "arnnotequals", "arnnotlike"})
_WILDCARD_BASES = frozenset({"stringlike", "stringnotlike", "arnequals", "arnlike", "arnnotequals", "arnnotlike"})
_ACCOUNT = digits(12)
_PRINCIPAL_TYPES = {"role": "AssumedRole", "user": "User", "root": "Account", "federated-user": "FederatedUser"}
# Present only when a service acts for a resource: absent for a user or role calling (SPEC §2.7).
SOURCE_KEYS = ("aws:sourceaccount", "aws:sourcearn", "aws:sourceorgid", "aws:sourceorgpaths")
DIRECT_CALLER: dict[str, Value] = dict.fromkeys(SOURCE_KEYS)


@dataclass(frozen=True, slots=True)
class Keys:
    """Which condition keys carry the account, the ARN and the organization of the one asking."""

    accounts: frozenset[str]
    arn: str
    org: str
    path: str
    tags: str  # prefix of the keys naming its tags ("" when it has none to choose)


PRINCIPAL = Keys(
    frozenset({"aws:principalaccount", "kms:calleraccount"}),
    "aws:principalarn",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:principaltag/",
)
SERVICE = Keys(
    frozenset({"aws:sourceaccount", "kms:calleraccount"}), "aws:sourcearn", "aws:sourceorgid", "aws:sourceorgpaths", ""
)


@dataclass(frozen=True, slots=True)
class Outsider:
    """One candidate: its condition context, and whether it stands for an unknown organization's
    members (a `potential` finding, not `public`: SPEC §3, "confined to an organization whose
    accounts are not known")."""

    account: str
    arn: str
    context: dict[str, Value]
    other_org: bool = False


def _shapes(clause: ConditionClause) -> list[Shape]:
    wild = clause.base in _WILDCARD_BASES
    return [glob(v, wild) for v in clause.values if "${" not in v]


def _is_literal(clause: ConditionClause, value: str) -> bool:
    return clause.base not in _WILDCARD_BASES or ("*" not in value and "?" not in value)


class _Patterns:
    """The identity conditions of a set of statements, sorted by what they constrain."""

    def __init__(self, statements: Iterable[Statement], keys: Keys) -> None:
        self.keys = keys
        self.per_statement: list[dict[str, list[ConditionClause]]] = []
        self.singles: dict[str, list[ConditionClause]] = {}
        # A Deny's negated clauses (`ArnNotLike aws:PrincipalArn [a, b]`): matching one of their
        # values is how a principal escapes that Deny, so it is tried together with the Allows'.
        self.escapes: dict[str, list[ConditionClause]] = {}
        self.named_accounts: set[str] = set()
        self.named_orgs: set[str] = set()
        self.tag_keys: set[str] = set()
        self.mentions_type = False
        for stmt in statements:
            if stmt.principals is not None:
                self.named_accounts.update(stmt.principals.mentioned)
            grouped: dict[str, list[ConditionClause]] = {}
            for clause in stmt.conditions:
                what = self._what(clause.key_lc)
                if what is None:
                    continue
                self.singles.setdefault(what, []).append(clause)
                if clause.base in _POSITIVE and clause.prefix != "forallvalues":
                    grouped.setdefault(what, []).append(clause)
                elif not stmt.allow and clause.base in _NEGATED and clause.prefix != "forallvalues":
                    self.escapes.setdefault(what, []).append(clause)
                for value in clause.values:
                    # Named, not the outsider's to be: a literal account (also the literal account
                    # field of an ARN pattern, whatever its resource), or organization.
                    if what == "account" and ACCOUNT_RE.match(value):
                        self.named_accounts.add(value)
                    elif what == "arn" and value.count(":") >= 5 and ACCOUNT_RE.match(value.split(":")[4]):
                        self.named_accounts.add(value.split(":")[4])
                    elif what in ("org", "path") and _is_literal(clause, value.split("/", 1)[0]):
                        self.named_orgs.add(value.split("/", 1)[0])
            self.per_statement.append(grouped)

    def _what(self, key: str) -> str | None:
        keys = self.keys
        if key in keys.accounts:
            return "account"
        if key == keys.arn:
            return "arn"
        if key == keys.org:
            return "org"
        if key == keys.path:
            return "path"
        if keys.tags and key.startswith(keys.tags):
            self.tag_keys.add(key)
            return key
        if key in ("aws:principaltype", "aws:username", "aws:userid"):
            self.mentions_type = True
        return None

    @property
    def empty(self) -> bool:
        return not self.singles and not self.mentions_type

    def combinations(self, *what: str) -> Iterator[list[Shape]]:
        """Value choices that must hold together: one value of each clause on `what` in one
        statement (values of a clause OR, clauses AND), then each value on its own; then each of
        those (and none) with a value that escapes the Denies' negated clauses — one of every
        such clause, or of one alone (a principal both an Allow admits and no Deny stops)."""
        allowed: list[list[Shape]] = []
        for grouped in self.per_statement:
            clauses = [c for w in what for c in grouped.get(w, ())]
            if clauses:
                options = [_shapes(c) for c in clauses]
                for combo in itertools.islice(itertools.product(*options), MAX_COMBINATIONS):
                    allowed.append(list(combo))
                    yield list(combo)
        for w in what:
            for clause in self.singles.get(w, ()):
                for one in _shapes(clause):
                    yield [one]
        escapes = [values for w in what for c in self.escapes.get(w, ()) if (values := _shapes(c))]
        if not escapes:
            return
        ways: list[list[Shape]] = [list(w) for w in itertools.islice(itertools.product(*escapes), MAX_COMBINATIONS)]
        if len(escapes) > 1:
            ways += [[one] for values in escapes for one in values]
        none: list[Shape] = []
        for chosen in [none, *allowed]:
            for way in ways[:MAX_COMBINATIONS]:
                yield [*chosen, *way]

    def patterns(self, what: str) -> list[str]:
        return [v for c in self.singles.get(what, ()) if c.base in _WILDCARD_BASES for v in c.values]


def _relevant(key: str, keys: Keys) -> bool:
    return (
        key in keys.accounts
        or key in (keys.arn, keys.org, keys.path, "aws:principaltype", "aws:username", "aws:userid")
        or bool(keys.tags and key.startswith(keys.tags))
    )


def signature(statements: tuple[Statement, ...], service: str = "") -> frozenset[object]:
    """What of `statements` the candidates depend on: the accounts their principals name and
    their conditions on the keys an outsider chooses, in any order. Equal signatures, equal
    candidates (in another order, which changes no verdict: their access is OR-ed)."""
    keys = SERVICE if service else PRINCIPAL
    return frozenset(
        (
            s.principals.mentioned if s.principals is not None else frozenset(),
            tuple(c for c in s.conditions if _relevant(c.key_lc, keys)),
        )
        for s in statements
    )


def _fresh_account(patterns: list[str], excluded: frozenset[str]) -> str:
    """An unnamed account that matches as few of the policy's account patterns as possible."""
    usable = [a for a in FRESH_ACCOUNTS if a not in excluded]
    return min(usable, key=lambda a: sum(wildcard_match(p, a) for p in patterns if p != "*"))


def _accounts(p: _Patterns, excluded: frozenset[str], arn_accounts: Iterable[str]) -> list[str]:
    account_patterns = p.patterns("account") + [v.split(":")[4] for v in p.patterns("arn") if v.count(":") >= 5]
    found = [_fresh_account(account_patterns, excluded)]
    for combo in p.combinations("account"):
        for filler in "07":
            w = intersect([*combo, _ACCOUNT], filler)
            if w is not None and w not in excluded:
                _add(found, w)
    # An ARN pattern's account field AND-ed with the account keys of the same statement.
    for grouped in p.per_statement:
        arn_fields = [
            [glob(v.split(":")[4]) for v in c.values if v.count(":") >= 5 and "${" not in v]
            for c in grouped.get("arn", ())
        ]
        if not any(arn_fields):
            continue
        clauses = [_shapes(c) for c in grouped.get("account", ())] + [f for f in arn_fields if f]
        for choice in itertools.islice(itertools.product(*clauses), MAX_COMBINATIONS):
            w = intersect([*choice, _ACCOUNT], "0")
            if w is not None and w not in excluded:
                _add(found, w)
    for account in arn_accounts:
        if account not in excluded:
            _add(found, account)
    return found


def _arn_tails(p: _Patterns, partition: str, service_side: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """(head, resource) of ARNs the arn patterns admit, and the accounts in those witnesses."""
    if service_side:
        shapes = [
            shape("arn:", partition, ":", One(""), Star(":"), ":", Star(":"), ":", _ACCOUNT, ":", One(""), Star(ALL))
        ]
        tails = [(f"arn:{partition}:logs:us-east-1", "log-group:" + FRESH_NAME)]
    else:
        name = (One(""), Star(ALL))  # a user or role name has at least one character
        shapes = [
            shape(f"arn:{partition}:iam::", _ACCOUNT, ":role/", *name),
            shape(f"arn:{partition}:iam::", _ACCOUNT, ":user/", *name),
            shape(f"arn:{partition}:iam::", _ACCOUNT, ":root"),
            shape(f"arn:{partition}:sts::", _ACCOUNT, ":federated-user/", *name),
        ]
        tails = [(f"arn:{partition}:iam:", f"role/{FRESH_NAME}")]
        if p.singles.get("arn") or p.mentions_type:
            tails += [(f"arn:{partition}:iam:", f"user/{FRESH_NAME}"), (f"arn:{partition}:iam:", "root")]
    accounts: list[str] = []
    for combo in p.combinations("arn"):
        for template in shapes:
            w = intersect([*combo, template], "z")
            if w is None:
                continue
            fields = w.split(":", 5)
            _add(tails, (":".join(fields[:4]), fields[5]))
            _add(accounts, fields[4])
    return tails, accounts


def _orgs(p: _Patterns, our_org: str | None) -> list[tuple[str | None, str | None]]:
    """(organization, its path) candidates: none, one of its own, and what the patterns admit."""
    if "org" not in p.singles and "path" not in p.singles:
        return [(None, None)]
    named = p.named_orgs | ({our_org} if our_org else set())
    found: list[tuple[str | None, str | None]] = [(None, None)]
    orgs = [FRESH_ORG]
    for combo in p.combinations("org"):
        w = intersect([*combo, shape("o-", One(""), Star("/"))], "z")
        if w is not None and w not in named:
            _add(orgs, w)
    paths: list[str] = []
    for combo in p.combinations("path"):
        w = intersect([*combo, shape("o-", One(""), Star("/"), "/", Star(ALL))], "z")
        if w is not None and w.split("/", 1)[0] not in named:
            _add(paths, w)
            _add(orgs, w.split("/", 1)[0])
    for org in orgs:
        own = [w for w in paths if w.startswith(org + "/")]
        for combo in p.combinations("path"):
            w = intersect([*combo, shape(org + "/", Star(ALL))], "z")
            if w is not None:
                _add(own, w)
        for path in own or [f"{org}/r-zzzz/ou-zzzz-zzzzzzzz/"]:
            found.append((org, path))
    return found


def _tags(p: _Patterns) -> list[tuple[tuple[str, str | None], ...]]:
    per_key: list[list[tuple[str, str | None]]] = []
    for key in sorted(p.tag_keys):
        values: list[str | None] = [None]
        for combo in p.combinations(key):
            w = intersect(combo, "z")
            if w is not None:
                _add(values, w)
        per_key.append([(key, v) for v in values])
    return list(itertools.product(*per_key))


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
    p = _Patterns(statements, keys)
    excluded = excluded | frozenset(p.named_accounts)
    if p.empty:
        account = _fresh_account([], excluded)
        arn = f"arn:{partition}:logs:us-east-1:{account}:log-group:{FRESH_NAME}" if service else ""
        arn = arn or f"arn:{partition}:iam::{account}:role/{FRESH_NAME}"
        return (Outsider(account, arn, _context(service, account, arn, None, None, ())),)
    other_org = bool(p.named_orgs - ({our_org} if our_org else set()))
    try:
        tails, arn_accounts = _arn_tails(p, partition, bool(service))
        accounts = _accounts(p, excluded, arn_accounts)
        orgs = _orgs(p, our_org)
        tags = _tags(p)
        too_many = len(accounts) * len(tails) * (len(orgs) + other_org) * len(tags) > MAX_CANDIDATES
    except _TooMany:
        too_many = True
    if too_many:
        # Too many to try: leave every identity key undecided. Never less than the truth (public,
        # conditional, with the identity conditions listed), only less precise.
        undecided: dict[str, Value] = (
            {"aws:principalisawsservice": ("true",), "aws:principalservicename": (service,)}
            if service
            else {"aws:principalisawsservice": ("false",), **DIRECT_CALLER}
        )
        return (Outsider(_fresh_account([], excluded), "", undecided),)
    found: list[Outsider] = []
    for account, (head, resource), tag_set in itertools.product(accounts, tails, tags):
        arn = f"{head}:{account}:{resource}"
        for org, path in orgs:
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
        "aws:principalisawsservice": ("true",),
        "aws:principalservicename": (service,),
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
        **DIRECT_CALLER,
    }
    if kind == "user":
        context["aws:username"] = (resource.rsplit("/", 1)[-1],)
    for key, value in tags:
        context[key] = (value,) if value is not None else None
    return context


def is_service_principal(principal: str) -> bool:
    """`rds.us-east-1.amazonaws.com`, `logs.amazonaws.com`: an AWS service, not an account."""
    return principal.endswith((".amazonaws.com", ".amazonaws.com.cn")) and ":" not in principal


__all__ = ["DIRECT_CALLER", "Outsider", "is_service_principal", "outsiders"]
