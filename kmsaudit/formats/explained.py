"""A finding with why it exists and what removes it (SPEC §4 `explanation`, `remediation`): as
JSON (the finding's own fields and both lists), and for a person on a terminal — the elements in
evaluation order, then each verified change with a diff of the key policy it proposes."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from kmsaudit.evaluator.canonical import pretty_policy
from kmsaudit.evaluator.policy import canonical_policy
from kmsaudit.model import Finding

Explained = tuple[Finding, list[dict[str, Any]], list[dict[str, Any]]]

_RED, _GREEN, _BOLD, _RESET = "\033[31m", "\033[32m", "\033[1m", "\033[0m"


def explained_dict(
    finding: Finding | Mapping[str, Any], explanation: list[Any], remediation: list[Any]
) -> dict[str, Any]:
    base = finding.to_dict() if isinstance(finding, Finding) else dict(finding)
    return {**base, "explanation": explanation, "remediation": remediation}


def condition_text(condition: Mapping[str, Any]) -> str:
    values = condition.get("values", [])
    shown = ", ".join(json.dumps(v) if not isinstance(v, str) else v for v in values)
    state = "open: decided only at request time" if condition.get("open") else "holds"
    return f"{condition.get('operator')} {condition.get('key')} = {shown} ({state})"


def why_line(explanation: Sequence[Mapping[str, Any]]) -> str:
    """One line (alerts): the elements that give the access, and what stays undecided."""
    giving = [e for e in explanation if e.get("part") == "grants"]
    open_ = [e for e in explanation if e.get("part") == "undecided"]
    parts = [", ".join(_element_name(e) for e in giving[:3]) + (" grant(s) it" if giving else "")] if giving else []
    if open_:
        parts.append("undecided: " + ", ".join(_element_name(e) for e in open_[:2]))
    return "; ".join(parts) or "see kmsaudit explain"


def _element_name(element: Mapping[str, Any]) -> str:
    source = element.get("source")
    if source == "grant":
        return f"grant {element.get('name')}"
    statement = element.get("statement")
    label = f'"{statement}"' if isinstance(statement, str) else f"#{statement}"
    where = "key policy" if source == "key-policy" else f"{source} {element.get('name')}"
    return f"{where} statement {label}"


def policy_diff(before: str | None, after: str, colour: bool = False) -> list[str]:
    """The revised key policy against the stored one, both as `history` prints them."""
    old = pretty_policy(canonical_policy(before)).splitlines() if before else []  # as `history` shows it
    new = pretty_policy(after).splitlines()
    lines = list(difflib.unified_diff(old, new, "key policy now", "key policy after the change", lineterm="", n=2))
    if not colour:
        return lines
    coloured = []
    for line in lines:
        if line.startswith("+") and not line.startswith("+++"):
            coloured.append(_GREEN + line + _RESET)
        elif line.startswith("-") and not line.startswith("---"):
            coloured.append(_RED + line + _RESET)
        else:
            coloured.append(line)
    return coloured


def write_explained(
    items: Sequence[Explained], fmt: str, out: TextIO, policy: str | None = None, colour: bool = False
) -> None:
    """`policy`: the key policy as stored (for the diff view of a table)."""
    if fmt == "json":
        dicts = [explained_dict(*item) for item in items]
        json.dump(dicts[0] if len(dicts) == 1 else dicts, out, indent=2)
        out.write("\n")
        return
    if fmt == "jsonl":
        for item in items:
            out.write(json.dumps(explained_dict(*item)) + "\n")
        return
    for n, (finding, explanation, remediation) in enumerate(items):
        if n:
            out.write("\n")
        head = f"{finding.severity} · {finding.access} · {finding.principal} on {finding.key_arn}"
        out.write((_BOLD + head + _RESET if colour else head) + "\n")
        out.write(f"  finding {finding.id}: {', '.join(finding.actions) or '-'} via {' + '.join(finding.via)}\n")
        out.write("\nWhy (in evaluation order):\n")
        for i, element in enumerate(explanation, 1):
            line = f" (line {element['line']})" if element.get("line") else ""
            out.write(f"  {i}. {_element_name(element)}{line}: {element.get('effect') or '-'}, {element['part']}\n")
            for condition in element.get("conditions", []):
                out.write(f"       {condition_text(condition)}\n")
        if not remediation:
            out.write("\nNo change removes this finding on its own.\n")
            continue
        out.write(
            "\nWhat removes it (each evaluated again: this finding gone, the others as they were unless listed):\n"
        )
        for i, change in enumerate(remediation, 1):
            verified = "verified" if change.get("verified") else "NOT verified"
            also = change.get("also_changes") or []
            also_text = (
                f"; also changes {len(also)} other finding(s): {', '.join(a[:12] for a in also)}" if also else ""
            )
            out.write(f"  {i}. {change['summary']} [{verified}{also_text}]\n")
            if change["kind"] == "key-policy":
                for line in policy_diff(policy, change["key_policy"], colour):
                    out.write(f"       {line}\n")
            out.write(f"       $ {change['command']}\n" if change.get("command") else "")
            if change["kind"] == "iam-policy":
                out.write(f"       the policy {change['policy']} of {change['principal']}, revised:\n")
                for line in change["iam_policy"].splitlines():
                    out.write(f"       {line}\n")
