"""The values an outsider (kmsaudit/evaluator/outsider.py) may take, read off the statements
themselves: the accounts, ARNs, organizations, paths and tags their identity conditions admit
(`witness.intersect`), a fresh value matching as little as possible, and the combinations that
must hold together — an Allow's clauses AND-ed, with a value that escapes the Denies' negated
clauses. Bounded: a hostile or generated policy raises TooMany, and the outsider is then decided
less precisely, never less than the truth."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kmsaudit.evaluator.match import ACCOUNT_RE, wildcard_match
from kmsaudit.evaluator.statements import ConditionClause, Statement
from kmsaudit.evaluator.witness import ALL, One, Shape, Star, digits, glob, intersect, shape

FRESH_NAME = "kmsaudit-outsider"
FRESH_ORG = "o-kmsauditzz9"
# Candidate accounts for "an account nobody named": the one matching fewest account patterns wins.
FRESH_ACCOUNTS = ("000000000000", "999999999999", "505050505050", "373737373737", "818181818181")
MAX_CANDIDATES = 512  # more: every identity key is left undecided (public, conditional)
MAX_COMBINATIONS = 16  # value combinations tried per statement
MAX_PER_KIND = 24  # accounts, ARNs, organizations: more than this, and the product is too many anyway


class TooMany(Exception):
    """More candidates than can be tried (a hostile or generated policy): decide less precisely."""


def _add(found: list[Any], item: Any) -> None:
    if item not in found:
        if len(found) >= MAX_PER_KIND:
            raise TooMany
        found.append(item)


_POSITIVE = frozenset({"stringequals", "stringequalsignorecase", "stringlike", "arnequals", "arnlike"})
_NEGATED = frozenset({"stringnotequals", "stringnotequalsignorecase", "stringnotlike", "arnnotequals", "arnnotlike"})
_WILDCARD_BASES = frozenset({"stringlike", "stringnotlike", "arnequals", "arnlike", "arnnotequals", "arnnotlike"})
_ACCOUNT = digits(12)


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


def _shapes(clause: ConditionClause) -> list[Shape]:
    wild = clause.base in _WILDCARD_BASES
    return [glob(v, wild) for v in clause.values if "${" not in v]


def _is_literal(clause: ConditionClause, value: str) -> bool:
    return clause.base not in _WILDCARD_BASES or ("*" not in value and "?" not in value)


class Patterns:
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
        if key == "aws:username" and keys is PRINCIPAL:
            return "username"  # a user of the name it admits (aws:username: IAM users only)
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


def relevant(key: str, keys: Keys) -> bool:
    return (
        key in keys.accounts
        or key in (keys.arn, keys.org, keys.path, "aws:principaltype", "aws:username", "aws:userid")
        or bool(keys.tags and key.startswith(keys.tags))
    )


def fresh_account(patterns: list[str], excluded: frozenset[str]) -> str:
    """An unnamed account that matches as few of the policy's account patterns as possible."""
    usable = [a for a in FRESH_ACCOUNTS if a not in excluded]
    return min(usable, key=lambda a: sum(wildcard_match(p, a) for p in patterns if p != "*"))


def accounts(p: Patterns, excluded: frozenset[str], arn_accounts: Iterable[str]) -> list[str]:
    account_patterns = p.patterns("account") + [v.split(":")[4] for v in p.patterns("arn") if v.count(":") >= 5]
    found = [fresh_account(account_patterns, excluded)]
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


def arn_tails(p: Patterns, partition: str, service_side: bool) -> tuple[list[tuple[str, str]], list[str]]:
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
            tails.append((f"arn:{partition}:sts:", f"federated-user/{FRESH_NAME}"))
        for combo in p.combinations("username"):
            w = intersect([*combo, shape(*name)], "z")
            if w is not None and "/" not in w:
                _add(tails, (f"arn:{partition}:iam:", f"user/{w}"))
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


def orgs(p: Patterns, our_org: str | None) -> list[tuple[str | None, str | None]]:
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


def tags(p: Patterns) -> list[tuple[tuple[str, str | None], ...]]:
    per_key: list[list[tuple[str, str | None]]] = []
    for key in sorted(p.tag_keys):
        values: list[str | None] = [None]
        for combo in p.combinations(key):
            w = intersect(combo, "z")
            if w is not None:
                _add(values, w)
        per_key.append([(key, v) for v in values])
    return list(itertools.product(*per_key))
