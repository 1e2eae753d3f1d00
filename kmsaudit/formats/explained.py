"""A finding with why it exists and what removes it (SPEC §4 `explanation`, `remediation`): as
JSON (the finding's own fields and both lists), and for a person on a terminal — the elements in
evaluation order, then each verified change with a diff of the key policy it proposes; and
`kmsaudit explain` of a stored finding, decided again from the documents kept with its snapshot
(kmsaudit/evidence.py) — nothing is read from AWS: what is shown is what it was decided from."""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from kmsaudit.errors import KmsAuditError, UsageError
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
    """One line (alerts): what gives the access, and what stays undecided."""
    giving = [_element_name(e) for e in explanation if e.get("part") == "grants"]
    open_ = [_element_name(e) for e in explanation if e.get("part") == "undecided"]
    parts = []
    if giving:
        parts.append("given by " + ", ".join(giving[:3]) + (f" and {len(giving) - 3} more" if len(giving) > 3 else ""))
    if open_:
        parts.append("undecided: " + ", ".join(open_[:2]))
    return "; ".join(parts) or "see kmsaudit explain"


def _element_name(element: Mapping[str, Any]) -> str:
    source = element.get("source")
    if source == "grant":
        return f"grant {element.get('name')}"
    statement = element.get("statement")
    label = f'"{statement}"' if isinstance(statement, str) else f"#{statement}"
    where = "key policy" if source == "key-policy" else f"{source} {element.get('name')}"
    return f"{where} statement {label}"


def _statements(text: str | None) -> list[Any]:
    try:
        listed = json.loads(canonical_policy(text) or "{}").get("Statement") if text else []
    except (ValueError, AttributeError, RecursionError):
        return []
    return listed if isinstance(listed, list) else [listed] if listed else []


def _same_statement(old: Any, new: Any) -> bool:
    """The same statement changed (its Principal or Condition): the same Sid, or, without one,
    the same effect, actions and resources."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    if old.get("Sid") or new.get("Sid"):
        return bool(old.get("Sid") == new.get("Sid"))
    fields = ("Effect", "Action", "NotAction", "Resource", "NotResource")
    return all(old.get(f) == new.get(f) for f in fields)


def policy_diff(before: str | None, after: str, colour: bool = False) -> list[str]:
    """What the revised key policy changes, statement by statement (both in canonical form, as
    `history` prints them): a statement removed, added, or changed (a diff of it alone)."""
    old, new = _statements(before), _statements(after)
    new_texts = [json.dumps(s, sort_keys=True) for s in new]
    old_texts = [json.dumps(s, sort_keys=True) for s in old]
    removed = [s for s, t in zip(old, old_texts, strict=True) if t not in new_texts]
    added = [s for s, t in zip(new, new_texts, strict=True) if t not in old_texts]
    lines: list[str] = []

    def label(stmt: Any) -> str:
        sid = stmt.get("Sid") if isinstance(stmt, dict) else None
        return f'statement "{sid}"' if sid else "a statement"

    def pretty(stmt: Any) -> list[str]:
        return json.dumps(stmt, indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    for stmt in removed:
        twin = next((a for a in added if _same_statement(stmt, a)), None)
        if twin is not None:
            added.remove(twin)
            lines.append(f"changed {label(stmt)}:")
            lines += list(difflib.unified_diff(pretty(stmt), pretty(twin), lineterm="", n=20))[2:]
        else:
            lines.append(f"removed {label(stmt)}:")
            lines += ["-" + line for line in pretty(stmt)]
    for stmt in added:
        lines.append(f"added {label(stmt)}:")
        lines += ["+" + line for line in pretty(stmt)]
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
    items: Sequence[Explained],
    fmt: str,
    out: TextIO,
    policy: str | None = None,
    colour: bool = False,
    stored: bool = False,
) -> None:
    """`policy`: the key policy as stored (for the diff view of a table); `stored`: the findings
    are a snapshot's (`kmsaudit explain`), not `evaluate`'s."""
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
        out.write(
            "\nWhy (in evaluation order; key-policy statement numbers and lines as `kmsaudit history` prints it):\n"
        )
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
        saved = {"key-policy": ("key_policy", "policy.json"), "iam-policy": ("iam_policy", "iam-policy.json")}
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
            if change["kind"] in saved:
                field, file = saved[change["kind"]]
                json_of = (
                    f"kmsaudit explain {finding.id[:12]} --format json"
                    if stored
                    else "(this command with --format json)"
                )
                out.write(f"       $ {json_of} | jq -r '.remediation[{i - 1}].{field}' > {file}\n")
            out.write(f"       $ {change['command']}\n" if change.get("command") else "")
            if change["kind"] == "iam-policy":
                out.write(f"       the policy {change['policy']} of {change['principal']}, revised:\n")
                for line in change["iam_policy"].splitlines():
                    out.write(f"       {line}\n")


MIN_PREFIX = 8


class NotReproduced(KmsAuditError):
    """The stored documents do not give the stored finding again (exit 1, a clear message)."""


def _find(rows: list[dict[str, Any]], wanted: str, snapshot: int) -> dict[str, Any]:
    wanted = wanted.strip().lower()
    exact = [r for r in rows if r["id"] == wanted]
    found = exact or ([r for r in rows if r["id"].startswith(wanted)] if len(wanted) >= MIN_PREFIX else [])
    if not found:
        hint = f" (at least {MIN_PREFIX} characters of an id)" if len(wanted) < MIN_PREFIX else ""
        raise UsageError(
            f"no finding {wanted} in snapshot {snapshot}{hint}: `kmsaudit findings --format json` lists the ids"
        )
    if len(found) > 1:
        raise UsageError(f"{wanted} starts {len(found)} finding ids in snapshot {snapshot}: give more of it")
    return found[0]


def explain_stored(
    config_path: str | Path, finding_id: str, snapshot_id: int | None, fmt: str, out: TextIO | None = None
) -> int:
    """`kmsaudit explain FINDING_ID` (SPEC §6): a stored finding decided again from the documents
    kept with its snapshot (no AWS call), shown with why it exists and what removes it."""
    from kmsaudit.config.settings import load_config
    from kmsaudit.store.database import Store

    config = load_config(config_path)
    store = Store(config.store.path, create=False)
    snapshot = snapshot_id if snapshot_id is not None else store.latest_snapshot()
    if snapshot is None or store.snapshot(snapshot) is None:
        which = f"no snapshot {snapshot_id}" if snapshot_id is not None else "no snapshot yet"
        raise UsageError(f"{which}: `kmsaudit snapshots` lists them (`kmsaudit scan` makes one)")
    row = _find(store.findings(snapshot), finding_id, snapshot)
    stored = Finding.from_dict(row)
    if store.stored_key(stored.key_arn, snapshot) is None:
        raise NotReproduced(
            f"snapshot {snapshot} has no stored grants and properties for {stored.key_arn} (it was scanned "
            "before kmsaudit kept them): run a scan, then `kmsaudit explain` its finding"
        )
    scope = store.stored_scope(snapshot, config.trust.accounts)
    found = store.explain_stored(snapshot, [row], scope)
    if stored.id not in found:
        raise NotReproduced(
            f"finding {stored.id} of snapshot {snapshot} is not given again, as stored, by the documents kept "
            "with it: its scope or an account's IAM carried over from an older read, or was read before this "
            "kmsaudit kept documents (a later snapshot that reads them explains it)"
        )
    explanation, remediation = found[stored.id]
    policy = store.policy_at(stored.key_arn, snapshot)
    out = out or sys.stdout
    write_explained([(stored, explanation, remediation)], fmt, out, policy, out.isatty(), stored=True)
    return 0
