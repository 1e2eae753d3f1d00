"""One text per policy, whatever order AWS returns it in (SPEC §5; issue #14).

Real KMS answers `GetKeyPolicy` with the same policy in a new order and layout on every call:
statements, the lists IAM treats as sets and object keys are reshuffled, and the document is
pretty-printed with `" : "` separators (aws-cli#9456). Hashing that text would make every key of
every scope look changed on every scan. The canonical form orders statements, the set-like
lists (`Action`, `NotAction`, `Resource`, `NotResource`, principal values, condition values) and
object keys, and keeps every value (duplicates too): two texts have the same canonical form
exactly when they are the same policy up to such reordering.

The parser (`policy.py`) builds it as it parses: `policy.canonical_policy(text)`. A text that
is not a JSON object is kept as it is (its hash is then of the raw text).
"""

from __future__ import annotations

import json
from typing import Any

_SET_VALUED = ("Action", "NotAction", "Resource", "NotResource")
_DUMPS = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _DUMPS(value)


def _sorted(values: Any) -> Any:
    """A list IAM reads as a set, in a canonical order; anything else unchanged."""
    if type(values) is not list:
        return values
    try:
        return sorted(values)  # strings, nearly always: their own order
    except TypeError:
        return sorted(values, key=_text)  # mixed types (a hand-written oddity): by their JSON


def _statement(stmt: Any) -> Any:
    if type(stmt) is not dict:
        return stmt
    out = dict(stmt)
    for field in _SET_VALUED:
        values = out.get(field)
        if type(values) is list:
            out[field] = _sorted(values)
    for field in ("Principal", "NotPrincipal"):
        principal = out.get(field)
        if type(principal) is dict:
            out[field] = {kind: _sorted(values) for kind, values in principal.items()}
    condition = out.get("Condition")
    if type(condition) is dict:
        out["Condition"] = {
            operator: {key: _sorted(values) for key, values in block.items()} if type(block) is dict else block
            for operator, block in condition.items()
        }
    return out


def canonical_statement(raw: Any) -> tuple[Any, str]:
    """A statement with its set-like lists in canonical order, and its canonical text (object
    keys sorted). The parser compiles the first and keys its cache on the second, so a statement
    reshuffled by KMS is the same statement to the evaluator's caches too."""
    stmt = _statement(raw)
    return stmt, _text(stmt)


_SPLICE = "\u0000kmsaudit-statements\u0000"


def document_text(doc: dict[str, Any], statement_texts: list[str]) -> str:
    """The policy's canonical text: top-level keys sorted, statements in canonical order
    (`statement_texts`, already sorted), every value kept."""
    if "Statement" not in doc:
        return _DUMPS(doc)
    rest = dict(doc)
    rest["Statement"] = _SPLICE
    joined = ",".join(statement_texts)
    statements = joined if isinstance(doc["Statement"], dict) else f"[{joined}]"
    return _DUMPS(rest).replace(_DUMPS(_SPLICE), statements, 1)


def pretty_policy(text: str | None) -> str:
    """For people (`kmsaudit history`): the canonical form, indented."""
    if text is None:
        return "(unreadable)"
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text
