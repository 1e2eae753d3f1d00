"""Three-valued evaluation of Condition blocks at audit time (SPEC §2.7).

A condition is TRUE, FALSE or UNKNOWN for a principal. What is known at audit time is put in
a `Context`; everything else (request-time keys such as `kms:ViaService`) is UNKNOWN.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from kmsaudit.evaluator.match import arn_account, arn_match, wildcard_match
from kmsaudit.evaluator.statements import ConditionClause

TRUE: Final = 2
UNKNOWN: Final = 1
FALSE: Final = 0

# SPEC §3: conditions that confine "*" to the principals they admit.
IDENTITY_KEYS = frozenset(
    {
        "aws:principalaccount",
        "kms:calleraccount",
        "aws:principalarn",
        "aws:principalorgid",
        "aws:principalorgpaths",
    }
)

_NEGATED = {
    "stringnotequals": "stringequals",
    "stringnotequalsignorecase": "stringequalsignorecase",
    "stringnotlike": "stringlike",
    "arnnotequals": "arnequals",
    "arnnotlike": "arnlike",
    "numericnotequals": "numericequals",
    "datenotequals": "dateequals",
    "notipaddress": "ipaddress",
}
_EQUALITY = frozenset({"stringequals", "stringequalsignorecase", "arnequals", "arnlike", "stringlike"})
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True, slots=True)
class Excluded:
    """A value not known exactly, but known not to be any of `values`.

    `values=None` means a fresh outsider: none of the literal values a policy can name.
    """

    values: frozenset[str] | None
    may_be_absent: bool = False


@dataclass(frozen=True, slots=True)
class ArnInAccount:
    """`aws:PrincipalArn` of some principal of `account` (None: an unnamed outsider account)."""

    account: str | None


Value = tuple[str, ...] | Excluded | ArnInAccount | None  # None: the key is absent


@dataclass(slots=True)
class Context:
    """What is known of one request at audit time: principal side and key side."""

    principal: Mapping[str, Value] = field(default_factory=dict)
    resource: Mapping[str, Value] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)  # lower-case tag key -> value

    def lookup(self, key_lc: str) -> Value | str:
        """Known values, `None` if absent, or the string "unknown"."""
        if key_lc in self.principal:
            return self.principal[key_lc]
        if key_lc in self.resource:
            return self.resource[key_lc]
        if key_lc.startswith("aws:resourcetag/"):
            tag = self.tags.get(key_lc[len("aws:resourcetag/") :])
            return None if tag is None else (tag,)
        return "unknown"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _date(text: str) -> datetime | None:
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _ip_in(value: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _compare(base: str, actual: str, wanted: str) -> bool:
    """The positive operator family applied to one context value and one policy value."""
    if base == "stringequals":
        return actual == wanted
    if base == "stringequalsignorecase":
        return actual.lower() == wanted.lower()
    if base == "stringlike":
        return wildcard_match(wanted, actual)
    if base in ("arnequals", "arnlike"):
        return arn_match(wanted, actual)
    if base == "bool":
        return actual.lower() == wanted.lower()
    if base == "binaryequals":
        return actual == wanted
    if base == "ipaddress":
        return _ip_in(actual, wanted)
    if base.startswith("numeric"):
        a, w = _number(actual), _number(wanted)
        if a is None or w is None:
            return False
        return bool(_ORDER[base[len("numeric") :]](a, w))
    if base.startswith("date"):
        ad, wd = _date(actual), _date(wanted)
        if ad is None or wd is None:
            return False
        return bool(_ORDER[base[len("date") :]](ad, wd))
    return False


_ORDER = {
    "equals": lambda a, b: a == b,
    "lessthan": lambda a, b: a < b,
    "lessthanequals": lambda a, b: a <= b,
    "greaterthan": lambda a, b: a > b,
    "greaterthanequals": lambda a, b: a >= b,
}
_KNOWN_BASES = frozenset(
    {
        "stringequals",
        "stringequalsignorecase",
        "stringlike",
        "arnequals",
        "arnlike",
        "bool",
        "binaryequals",
        "ipaddress",
        "null",
    }
    | {"numeric" + k for k in _ORDER}
    | {"date" + k for k in _ORDER}
    | set(_NEGATED)
)


def _absent(clause: ConditionClause, negated: bool) -> int:
    if clause.base == "null":
        return TRUE if any(v.lower() == "true" for v in clause.values) else FALSE
    if clause.if_exists or clause.prefix == "forallvalues" or negated:
        return TRUE
    return FALSE


def _literal(values: Iterable[str]) -> bool:
    return all("*" not in v and "?" not in v for v in values)


def _excluded(clause: ConditionClause, base: str, negated: bool, value: Excluded) -> int:
    """Decide a clause on a value known only by what it is not (SPEC §2.7 perimeter rule)."""
    if clause.base == "null":
        if value.may_be_absent:
            return UNKNOWN
        return TRUE if any(v.lower() == "false" for v in clause.values) else FALSE
    if base not in _EQUALITY or not _literal(clause.values):
        if value.values is None and not negated and "*" in clause.values:
            return UNKNOWN if value.may_be_absent else TRUE
        return UNKNOWN
    if value.values is not None:
        fold = base == "stringequalsignorecase"
        excluded = {v.lower() for v in value.values} if fold else value.values
        if not all((v.lower() if fold else v) in excluded for v in clause.values):
            return UNKNOWN
    if negated:
        return TRUE
    absent_true = clause.if_exists or clause.prefix == "forallvalues"
    return UNKNOWN if (value.may_be_absent and absent_true) else FALSE


def _arn_in_account(clause: ConditionClause, base: str, negated: bool, value: ArnInAccount) -> int:
    if base not in ("arnequals", "arnlike", "stringequals", "stringlike", "stringequalsignorecase"):
        return UNKNOWN
    can_match = False
    for wanted in clause.values:
        account = arn_account(wanted)
        if value.account is None:
            can_match = can_match or wanted == "*" or "*" in account or "?" in account
        else:
            can_match = can_match or wanted == "*" or wildcard_match(account, value.account)
    if can_match:
        return UNKNOWN
    return TRUE if negated else FALSE


def _substitute(values: tuple[str, ...], ctx: Context) -> tuple[str, ...] | None:
    """Resolve `${…}` policy variables from known single values; None if one is not known."""
    out = []
    for v in values:
        if "${" not in v:
            out.append(v)
            continue
        failed = False

        def repl(m: re.Match[str]) -> str:
            nonlocal failed
            name = m.group(1)
            if name in ("*", "?", "$"):
                return name
            name = name.split(",", 1)[0].strip().lower()
            found = ctx.lookup(name)
            if isinstance(found, tuple) and len(found) == 1:
                return found[0]
            failed = True
            return ""

        text = _VARIABLE.sub(repl, v)
        if failed:
            return None
        out.append(text)
    return tuple(out)


def evaluate_clause(clause: ConditionClause, ctx: Context) -> int:
    """TRUE, FALSE or UNKNOWN for one operator-key pair (values of one key OR together)."""
    base = clause.base
    if base not in _KNOWN_BASES:
        return UNKNOWN  # an operator AWS would reject: never decide on it
    value = ctx.lookup(clause.key_lc)
    if isinstance(value, str):
        return UNKNOWN
    negated = base in _NEGATED
    positive = _NEGATED.get(base, base)
    if value is None or value == ():
        return _absent(clause, negated)
    if isinstance(value, Excluded):
        return _excluded(clause, positive, negated, value)
    if base == "null":  # the key is present (SPEC §2.7: aws:PrincipalArn is in every signed request)
        return TRUE if any(v.lower() == "false" for v in clause.values) else FALSE
    if isinstance(value, ArnInAccount):
        return _arn_in_account(clause, positive, negated, value)
    wanted = clause.values
    if any("${" in w for w in wanted):
        resolved = _substitute(wanted, ctx)
        if resolved is None:
            return UNKNOWN
        wanted = resolved
    hits = [any(_compare(positive, actual, w) for w in wanted) for actual in value]
    if clause.prefix == "forallvalues":
        ok = all((not h) if negated else h for h in hits)
    elif clause.prefix == "foranyvalue":
        ok = any((not h) if negated else h for h in hits)
    else:
        ok = (not any(hits)) if negated else any(hits)
    return TRUE if ok else FALSE


def evaluate_block(clauses: tuple[ConditionClause, ...], ctx: Context) -> tuple[int, tuple[ConditionClause, ...]]:
    """AND of every clause: FALSE wins, then UNKNOWN (with the undecided clauses listed)."""
    undecided: list[ConditionClause] = []
    for clause in clauses:
        result = evaluate_clause(clause, ctx)
        if result == FALSE:
            return FALSE, ()
        if result == UNKNOWN:
            undecided.append(clause)
    return (UNKNOWN, tuple(undecided)) if undecided else (TRUE, ())
