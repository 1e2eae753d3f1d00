"""Policy documents in every shape AWS emits, parsed into compiled statements (SPEC §2.10)."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from kmsaudit.evaluator.actions import ALL_MASK, CROSS_ACCOUNT_MASK, names, pattern_mask
from kmsaudit.evaluator.canonical import canonical_statement, document_text
from kmsaudit.evaluator.conditions import operation_parts
from kmsaudit.evaluator.match import parse_principal, wildcard
from kmsaudit.evaluator.memo import MISSING, Memo
from kmsaudit.evaluator.statements import (
    SERVICE_CONDITION_KEYS,
    ConditionClause,
    Policy,
    PrincipalSet,
    Statement,
    subject_only_conditions,
)

T = TypeVar("T")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class PolicyParseError(ValueError):
    """The document is not a policy at all (not JSON, not an object)."""


def _as_list(raw: Any) -> list[Any]:
    if raw is None:
        return []
    return raw if isinstance(raw, list) else [raw]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, sort_keys=True, default=str)


def _parse_operator(operator: str) -> tuple[str, str, bool]:
    op = operator.strip()
    prefix = ""
    head, sep, rest = op.partition(":")
    if sep and head.lower() in ("foranyvalue", "forallvalues"):
        prefix, op = head.lower(), rest
    lowered = op.lower()
    if_exists = lowered.endswith("ifexists")
    if if_exists:
        lowered = lowered[: -len("ifexists")]
    return lowered, prefix, if_exists


def _conditions(raw: Any, problems: list[str]) -> tuple[ConditionClause, ...]:
    if raw is None or raw == {}:
        return ()
    if not isinstance(raw, dict):
        problems.append("Condition is not an object")
        return (ConditionClause("<malformed>", "<malformed>", "", False, "", "", ()),)
    clauses = []
    for operator, block in raw.items():
        if not isinstance(block, dict):
            problems.append(f"condition operator {operator!s:.60} has no key map")
            clauses.append(ConditionClause(str(operator), "<malformed>", "", False, "", "", ()))
            continue
        base, prefix, if_exists = _parse_operator(str(operator))
        for key, values in block.items():
            flat = tuple(_scalar(v) for v in _as_list(values) if v is not None)
            clauses.append(ConditionClause(str(operator), base, prefix, if_exists, str(key), str(key).lower(), flat))
    return tuple(clauses)


def _is_kms_pattern(pattern: str) -> bool:
    text = pattern.strip().lower()
    return ":" not in text or text.split(":", 1)[0] in ("kms", "kms*", "*")


Notes = tuple[tuple[str, str], ...]


@lru_cache(maxsize=8192)
def _actions(patterns: tuple[str, ...], not_action: bool) -> tuple[int, Notes, bool]:
    """The action mask of an Action/NotAction list, what the lints need to know of it, and
    whether that is only local-only actions."""
    mask = 0
    notes = []
    for pattern in patterns:
        bits = pattern_mask(pattern)
        mask |= bits
        if not bits and _is_kms_pattern(pattern):
            notes.append(("nothing", pattern))
        elif bits and not not_action and not bits & CROSS_ACCOUNT_MASK:
            notes.append(("local-only", pattern))
    if not_action:
        mask = ALL_MASK & ~mask
    return mask, tuple(notes), bool(notes) and all(kind == "local-only" for kind, _ in notes)


def _principals(raw: Any) -> tuple[PrincipalSet, Notes]:
    pset = PrincipalSet.of(parse_principal(raw))
    notes = tuple((r.kind, r.value[:200]) for r in pset.refs if r.kind in ("unique-id", "invalid"))
    return pset, notes


def _condition_block(raw: Any) -> tuple[tuple[ConditionClause, ...], tuple[str, ...]]:
    problems: list[str] = []
    clauses = _conditions(raw, problems)
    return clauses, tuple(problems)


# Parts of statements (Principal, Condition blocks) repeat even where whole statements do not:
# a key's administrators' statement is unique to the key, the account it names is not.
_PARTS = Memo(50_000)


def _part(kind: str, raw: Any, build: Callable[[Any], T]) -> T:
    try:
        marker = (kind, raw if isinstance(raw, str) else repr(raw))
    except (RecursionError, ValueError):
        return build(raw)
    found = _PARTS.get(marker, MISSING)
    if found is MISSING:
        found = _PARTS[marker] = build(raw)
    return found  # type: ignore[no-any-return]


def _statement(raw: Any) -> tuple[Statement | None, tuple[str, ...]]:
    """One statement and its problems (messages without the statement's position)."""
    if not isinstance(raw, dict):
        return None, ("not an object",)
    problems: list[str] = []
    sid = raw.get("Sid")
    sid = sid if isinstance(sid, str) else ""
    effect = raw.get("Effect")
    if not isinstance(effect, str) or effect not in ("Allow", "Deny"):
        return None, (f"Effect must be Allow or Deny, not {effect!r:.40}",)
    not_principal = "NotPrincipal" in raw
    principals = None
    notes: Notes = ()
    if "Principal" in raw or not_principal:
        principals, notes = _part("principal", raw.get("NotPrincipal" if not_principal else "Principal"), _principals)
    not_action = "NotAction" in raw
    patterns = tuple(map(str, _as_list(raw.get("NotAction" if not_action else "Action"))))
    mask, action_notes, local_only = _actions(patterns, not_action)
    if not patterns:
        problems.append("no Action or NotAction")
    not_resource = "NotResource" in raw
    resources = None
    if "Resource" in raw or not_resource:
        resources = tuple(map(str, _as_list(raw.get("NotResource" if not_resource else "Resource"))))
    conditions: tuple[ConditionClause, ...] = ()
    raw_conditions = raw.get("Condition")
    if raw_conditions is not None and raw_conditions != {}:
        conditions, found = _part("condition", raw_conditions, _condition_block)
        problems.extend(found)
    exact: frozenset[str] = frozenset()
    wild: tuple[str, ...] = ()
    if resources and (not_resource or resources != ("*",)):  # else every key: `resource_all`
        exact = frozenset(r for r in resources if "*" not in r and "?" not in r)
        wild = tuple(r for r in resources if "*" in r or "?" in r)
    stmt = Statement(
        sid,
        effect == "Allow",
        principals,
        not_principal,
        mask,
        patterns,
        not_action,
        resources,
        not_resource,
        conditions,
        action_notes + notes,
        resources is None or (not not_resource and "*" in resources),
        not conditions or subject_only_conditions(conditions),
        exact,
        wild,
        local_only and not notes,
        any(c.key_lc in SERVICE_CONDITION_KEYS for c in conditions),
    )
    split = operation_parts(mask, conditions) if conditions else None
    if split is not None:
        stmt.parts = tuple((m, clauses, (stmt, i)) for i, (m, clauses) in enumerate(split))
    return stmt, tuple(problems)


Parsed = tuple[Statement | None, tuple[str, ...], str | None]  # statement, problems, canonical text
_STATEMENTS = Memo(50_000)  # repr of a statement as written -> Parsed
_CANONICAL = Memo(50_000)  # canonical text of a statement -> Parsed


def _cached_statement(raw: Any) -> Parsed:
    """Statements repeat across key policies (defaults, console templates): parse each once. The
    same statement reshuffled (KMS returns lists and keys in a new order on every call) is found
    by its canonical text, and is compiled from its canonical form: what the evaluator decides and
    reports of it never depends on the order AWS chose."""
    try:
        marker = repr(raw)
    except (RecursionError, ValueError):
        return (*_statement(raw), None)
    found: Parsed | None = _STATEMENTS.get(marker)
    if found is None:
        try:
            canon, text = canonical_statement(raw)
        except (RecursionError, ValueError, TypeError):
            return (*_statement(raw), None)
        found = _CANONICAL.get(text)
        if found is None:
            found = _CANONICAL[text] = (*_statement(canon), text)
        _STATEMENTS[marker] = found
    return found


def load_document(raw: Any) -> dict[str, Any]:
    """An object from a dict, a JSON string or an URL-encoded JSON string (as IAM returns)."""
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        text = raw.strip()
        if text[:1] != "{" and "%" in text:
            text = urllib.parse.unquote(text).strip()
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise PolicyParseError(f"not valid JSON: {str(exc)[:120]}") from None
        if _SURROGATE_ESCAPE.search(text):  # rare: checked only when the text escapes a surrogate
            try:
                json.dumps(raw, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                # "\ud800" alone is JSON but no text: it could be neither matched, stored nor shown
                raise PolicyParseError("not valid Unicode: an unpaired surrogate escape (\\ud800-\\udfff)") from None
    if not isinstance(raw, dict):
        raise PolicyParseError(f"a policy must be a JSON object, not {type(raw).__name__}")
    return raw


def _parse(raw: Any) -> Policy:
    doc = load_document(raw)
    parsed = [_cached_statement(item) for item in _as_list(doc.get("Statement"))]
    canonical = None
    if all(text is not None for _, _, text in parsed):
        parsed.sort(key=lambda p: p[2] or "")  # canonical order
        try:
            canonical = document_text(doc, [text or "" for _, _, text in parsed])
        except (RecursionError, ValueError, TypeError):
            canonical = None
    problems: list[str] = []
    statements = []
    for i, (stmt, found, _) in enumerate(parsed):
        if stmt is not None:
            statements.append(stmt)
        if found:
            sid = f" ({stmt.sid[:60]})" if stmt is not None and stmt.sid else ""
            problems.extend(f"statement {i}{sid}: {problem}" for problem in found)
    return Policy(tuple(statements), tuple(problems), canonical)


@lru_cache(maxsize=8192)
def _parse_text(text: str) -> Policy:
    return _parse(text)


def parse_policy(raw: Any) -> Policy:
    """Parse once: identical texts (the default key policy, shared managed policies) are cached."""
    try:
        if isinstance(raw, str):
            return _parse_text(raw)
        if isinstance(raw, dict):
            try:
                text = json.dumps(raw, sort_keys=True, default=str)
            except (TypeError, ValueError):
                return _parse(raw)
            return _parse_text(text)
        return _parse(raw)
    except RecursionError:
        raise PolicyParseError("nested too deeply") from None


def statements_as_written(raw: Any) -> list[tuple[int, Statement | None]]:
    """Each statement of a document in its written order, with its position, as the evaluator
    compiled it (the same interned object its verdicts were made with; None if skipped)."""
    doc = load_document(raw)
    return [(i, _cached_statement(item)[0]) for i, item in enumerate(_as_list(doc.get("Statement")))]


def canonical_policy(raw: str | None) -> str | None:
    """The canonical text of a key policy (SPEC §5: what is hashed, stored and compared), or
    `raw` itself when it is not a policy object (an unparseable text is kept as it is)."""
    if raw is None:
        return None
    try:
        policy = parse_policy(raw)
    except PolicyParseError:
        return raw
    return policy.canonical if policy.canonical is not None else raw


def clear_caches() -> None:
    """Forget every parsed statement, policy and pattern (benchmarks start cold with this)."""
    _STATEMENTS.clear()
    _CANONICAL.clear()
    _PARTS.clear()
    for cached in (_parse_text, _actions, pattern_mask, names, wildcard):
        cached.cache_clear()
