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

from kmsaudit.evaluator.actions import bit
from kmsaudit.evaluator.condkeys import ABSENT, PRESENT, key_info, presence
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
# In the request, its value not known at audit time (condkeys.PRESENT).
SOME_VALUE: Final = Excluded(frozenset())
# Context entries that are not condition keys (no ":"): who calls, and whether its tags are known.
CALLER: Final = "@caller"
TAGS_KNOWN: Final = "@tags-known"


@dataclass(slots=True)
class Context:
    """What is known of one request at audit time: principal side and key side."""

    principal: Mapping[str, Value] = field(default_factory=dict)
    resource: Mapping[str, Value] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)  # lower-case tag key -> value

    def lookup(self, key_lc: str) -> Value | str:
        """Known values, `None` if absent, or the string "unknown".

        A key the context does not give is decided by the condition-key table alone (SPEC §2.7,
        kmsaudit/evaluator/condkeys.py): absent, present with a value not known, or undecided."""
        if key_lc in self.principal:
            return self.principal[key_lc]
        if key_lc in self.resource:
            return self.resource[key_lc]
        if key_lc.startswith("aws:resourcetag/"):
            tag = self.tags.get(key_lc[len("aws:resourcetag/") :])
            return None if tag is None else (tag,)
        info = key_info(key_lc)
        if info is None:
            return "unknown"
        caller = self.principal.get(CALLER)
        found = presence(info, caller[0] if isinstance(caller, tuple) else "any", TAGS_KNOWN in self.principal)
        if found == ABSENT:
            return None
        return SOME_VALUE if found == PRESENT else "unknown"


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
    """A clause on a key absent from the request (SPEC §2.7): `Null` tests it; `…IfExists` and
    `ForAllValues:` are true; `ForAnyValue:` is false (negated or not); then the negated
    operators are true and the others false."""
    if clause.base == "null":
        return TRUE if any(v.lower() == "true" for v in clause.values) else FALSE
    if clause.if_exists and clause.prefix == "foranyvalue":
        # `…IfExists` says true, `ForAnyValue:` false: the pages do not say which wins (the
        # differential fuzzer's simulator answers false), so it is left undecided.
        return UNKNOWN
    if clause.if_exists or clause.prefix == "forallvalues":
        return TRUE
    if clause.prefix == "foranyvalue":
        return FALSE
    return TRUE if negated else FALSE


def _literal(values: Iterable[str]) -> bool:
    return all("*" not in v and "?" not in v for v in values)


def _excluded(clause: ConditionClause, base: str, negated: bool, value: Excluded) -> int:
    """Decide a clause on a value known only by what it is not (SPEC §2.7 perimeter rule); one
    that may be absent too is decided only where both cases agree."""
    if clause.base == "null":
        if value.may_be_absent:
            return UNKNOWN
        return TRUE if any(v.lower() == "false" for v in clause.values) else FALSE
    present = _excluded_present(clause, base, negated, value)
    if not value.may_be_absent or present == _absent(clause, negated):
        return present
    return UNKNOWN


def _excluded_present(clause: ConditionClause, base: str, negated: bool, value: Excluded) -> int:
    if base not in _EQUALITY or not _literal(clause.values):
        if value.values is None and not negated and "*" in clause.values:
            return TRUE
        return UNKNOWN
    if value.values is not None:
        fold = base == "stringequalsignorecase"
        excluded = {v.lower() for v in value.values} if fold else value.values
        if not all((v.lower() if fold else v) in excluded for v in clause.values):
            return UNKNOWN
    return TRUE if negated else FALSE


_PRINCIPAL_ARN_FORMS = (("iam", ("user/", "role/", "root")), ("sts", ("federated-user/",)))


def _names_a_principal(pattern: str) -> bool:
    """Can `pattern` match some `aws:PrincipalArn`? That is a user's, a role's (never a role
    session's: SPEC §2.7), the root's or a federated user's ARN."""
    parts = pattern.split(":", 5)
    if len(parts) < 6:
        return "*" in pattern or "?" in pattern
    service, resource = parts[2], parts[5]
    literal = re.split(r"[*?$]", resource, maxsplit=1)[0]
    for name, forms in _PRINCIPAL_ARN_FORMS:
        if wildcard_match(service, name) and any(f.startswith(literal) or literal.startswith(f) for f in forms):
            return True
    return False


def _arn_in_account(clause: ConditionClause, base: str, negated: bool, value: ArnInAccount) -> int:
    if base not in ("arnequals", "arnlike", "stringequals", "stringlike", "stringequalsignorecase"):
        return UNKNOWN
    can_match = False
    for wanted in clause.values:
        account = arn_account(wanted)
        if wanted != "*" and not _names_a_principal(wanted):
            continue
        if value.account is None:
            can_match = can_match or wanted == "*" or "*" in account or "?" in account
        else:
            can_match = can_match or wanted == "*" or wildcard_match(account, value.account)
    if can_match:
        return UNKNOWN
    return TRUE if negated else FALSE


_NO_VALUE: Final = "no-value"


def _substitute(values: tuple[str, ...], ctx: Context) -> tuple[str, ...] | str:
    """Resolve `${…}` policy variables from known single values (`${key, 'default'}` takes the
    default when the key is absent). "unknown" if one is not known; "no-value" if one names a
    key absent from the request (IAM User Guide, "Policy variables with no value")."""
    out = []
    state = ""
    for v in values:
        if "${" not in v:
            out.append(v)
            continue

        def repl(m: re.Match[str]) -> str:
            nonlocal state
            name = m.group(1)
            if name in ("*", "?", "$"):
                return name
            name, _, default = name.partition(",")
            found = ctx.lookup(name.strip().lower())
            if isinstance(found, tuple) and len(found) == 1:
                return found[0]
            default = default.strip()
            if found is None and len(default) >= 2 and default[0] == default[-1] == "'":
                return default[1:-1]
            state = (state or _NO_VALUE) if found is None else "unknown"
            return ""

        text = _VARIABLE.sub(repl, v)
        if state != _NO_VALUE:
            if state:
                return state
            out.append(text)
        state = "" if state == _NO_VALUE else state
    if not out:
        return _NO_VALUE
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
        if resolved == "unknown":
            return UNKNOWN
        if isinstance(resolved, str):  # every value names a key with no value: nothing matches
            return TRUE if negated else FALSE
        wanted = resolved
    hits = [any(_compare(positive, actual, w) for w in wanted) for actual in value]
    if clause.prefix == "forallvalues":
        ok = all((not h) if negated else h for h in hits)
    elif clause.prefix == "foranyvalue":
        ok = any((not h) if negated else h for h in hits)
    else:
        ok = (not any(hits)) if negated else any(hits)
    return TRUE if ok else FALSE


def operation_parts(
    mask: int, clauses: tuple[ConditionClause, ...]
) -> tuple[tuple[int, tuple[ConditionClause, ...]], ...] | None:
    """A statement's actions split by the operation-bound keys its conditions name (SPEC §2.7:
    `kms:GrantIsForAWSResource` is only in CreateGrant, ListGrants and RevokeGrant requests…):
    for the actions whose requests never carry such a key, its clause is decided as absent —
    dropped when that makes it true, the actions left out when false. None: no such key."""
    bound = []
    for clause in clauses:
        info = key_info(clause.key_lc)
        if info is not None and info.operations is not None:
            present = sum(bit(op) for op in info.operations)
            if mask & ~present:
                bound.append((clause, present, _absent(clause, clause.base in _NEGATED)))
    if not bound:
        return None
    parts: dict[tuple[ConditionClause, ...] | None, int] = {}
    rest = mask
    while rest:
        action = rest & -rest
        rest &= ~action
        dropped: set[int] = set()
        kept: tuple[ConditionClause, ...] | None = None
        for i, (_, present, result) in enumerate(bound):
            if not action & present:
                if result == FALSE:
                    break
                if result == TRUE:
                    dropped.add(i)
        else:
            kept = tuple(c for c in clauses if not any(c is bound[i][0] for i in dropped))
        parts[kept] = parts.get(kept, 0) | action
    return tuple((m, kept) for kept, m in parts.items() if kept is not None)


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
