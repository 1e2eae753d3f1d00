"""`kmsaudit evaluate --format sarif`: findings and lints as SARIF 2.1.0, so a repository of key
policies can be gated in CI by code scanning (README "Integrations"). One result per finding and
per lint; the rule is the access level (or the lint's kind); the location is the policy file and
the line of the statement that gives the access, where one can be told.

Which statement gives a finding's access: the statement its conditions come from (they name
their `Sid`), else an `Allow` statement naming the principal (its ARN, its account or its root,
or `*` for public access). Access through a grant points at the grant in the `--grants` file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kmsaudit import __version__
from kmsaudit.evaluator.canonical import canonical_statement
from kmsaudit.evaluator.policy import canonical_policy
from kmsaudit.model import Finding, Lint

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
_RULES = {
    "access/public": ("PublicKeyAccess", "Anyone can use the KMS key", "critical"),
    "access/effective": ("EffectiveCrossAccountAccess", "A principal outside the account can use the key", "high"),
    "access/potential": (
        "PotentialCrossAccountAccess",
        "The key policy lets a principal outside the account use the key, if its own IAM allows it",
        "medium",
    ),
    "unparseable/none": ("UnparseablePolicy", "The key policy cannot be read as IAM would", "high"),
}


# -- where things are in a JSON text --------------------------------------------------------
def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _members(text: str, i: int) -> Iterator[tuple[str, int, int]]:
    """(key, value start, value end) of the object starting at `i`."""
    decoder = json.JSONDecoder()
    i = _skip(text, i)
    if text[i : i + 1] != "{":
        return
    i = _skip(text, i + 1)
    while i < len(text) and text[i] != "}":
        key, i = decoder.raw_decode(text, i)
        i = _skip(text, i)
        i = _skip(text, i + 1)  # the colon
        _, end = decoder.raw_decode(text, i)
        yield str(key), i, end
        i = _skip(text, end)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)


def _elements(text: str, i: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each element of the array starting at `i`."""
    decoder = json.JSONDecoder()
    i = _skip(text, i + 1)
    while i < len(text) and text[i] != "]":
        _, end = decoder.raw_decode(text, i)
        yield i, end
        i = _skip(text, end)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def statement_lines(text: str) -> list[tuple[int, dict[str, Any]]]:
    """Each statement of a key policy file with the line it starts on. The file may be the policy
    itself or what `aws kms get-key-policy` prints (the policy as a string: its `Policy` line)."""
    try:
        for key, start, end in _members(text, 0):
            if key == "Policy" and text[start] == '"':
                inner = json.loads(text[start:end])
                return [(_line(text, start), stmt) for _, stmt in statement_lines(inner)]
            if key == "Statement":
                if text[start] == "[":
                    return [(_line(text, s), json.loads(text[s:e])) for s, e in _elements(text, start)]
                return [(_line(text, start), json.loads(text[start:end]))]
    except (ValueError, IndexError, RecursionError):
        pass
    return []


def _names_principal(statement: dict[str, Any], finding: Finding) -> bool:
    principal = statement.get("Principal")
    if principal == "*":
        return finding.access == "public"
    if not isinstance(principal, dict):
        return False
    values = principal.get("AWS", [])
    values = values if isinstance(values, list) else [values]
    services = principal.get("Service", [])
    services = services if isinstance(services, list) else [services]
    account = finding.principal_account
    wanted = {finding.principal, account, f"arn:aws:iam::{account}:root"}
    return bool(wanted & set(map(str, values + services))) or ("*" in values and finding.access == "public")


def _statement_line(finding: Finding, statements: Sequence[tuple[int, dict[str, Any]]]) -> int | None:
    sids = [c.get("sid") for c in finding.conditions if c.get("source") == "key-policy" and c.get("sid")]
    for line, stmt in statements:
        if stmt.get("Sid") and stmt.get("Sid") in sids and stmt.get("Effect") == "Allow":
            return line
    for line, stmt in statements:
        if stmt.get("Effect") == "Allow" and _names_principal(stmt, finding):
            return line
    return None


def _canonical_statements(policy_text: str) -> list[Any]:
    """The statements of the file's policy in canonical order (what explanations count)."""
    try:
        canonical = json.loads(canonical_policy(json.dumps(_document(policy_text))) or "{}")
    except (ValueError, RecursionError, TypeError, AttributeError):
        return []
    listed = canonical.get("Statement") if isinstance(canonical, dict) else None
    return listed if isinstance(listed, list) else [listed] if listed is not None else []


def _sid_positions(policy_text: str) -> dict[str, int]:
    """Sid -> position in the canonical policy, for the Sids an explanation uses (unique ones)."""
    sids = [s.get("Sid") if isinstance(s, dict) else None for s in _canonical_statements(policy_text)]
    return {sid: i for i, sid in enumerate(sids) if isinstance(sid, str) and sid and sids.count(sid) == 1}


def _grant_line(text: str, principal: str) -> int | None:
    needle = json.dumps(principal)
    at = text.find(needle)
    return _line(text, at) if at >= 0 else None


# -- the log --------------------------------------------------------------------------------
def _uri(path: str) -> str:
    """Relative to the working directory (code scanning wants repository paths), else a file URI."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(Path(os.getcwd()).resolve()).as_posix()
    except ValueError:
        return resolved.as_uri()


def _location(uri: str, line: int | None) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": {"uri": uri}}
    if line is not None:
        physical["region"] = {"startLine": line}
    return {"physicalLocation": physical}


def _canonical_lines(statements: Sequence[tuple[int, dict[str, Any]]], policy_text: str) -> dict[int, int]:
    """Position of each statement in the canonical policy (what explanations count) -> its line
    in the file as given."""
    by_text: dict[str, list[int]] = {}
    for position, stmt in enumerate(_canonical_statements(policy_text)):
        by_text.setdefault(canonical_statement(stmt)[1], []).append(position)
    out: dict[int, int] = {}
    for line, stmt in statements:
        positions = by_text.get(canonical_statement(stmt)[1])
        if positions:
            out[positions.pop(0)] = line
    return out


def _document(policy_text: str) -> Any:
    doc = json.loads(policy_text)
    if isinstance(doc, dict) and isinstance(doc.get("Policy"), str):
        return json.loads(doc["Policy"])
    return doc


def _explained(
    result: dict[str, Any],
    explanation: Sequence[dict[str, Any]],
    remediation: Sequence[dict[str, Any]],
    uris: tuple[str, str | None],
    lines: dict[int, int],
    sids: dict[str, int],
    policy_text: str,
) -> None:
    """A result's explanation as `relatedLocations` (the statements and grants it rests on) and
    its key-policy and grant remediations as `fixes` (the whole file replaced by the revised
    policy, verified; SARIF 2.1.0 §3.55)."""
    related = []
    for n, element in enumerate(explanation, 1):
        statement = element.get("statement")
        if element.get("source") == "key-policy":
            position = sids.get(statement) if isinstance(statement, str) else statement
            where = _location(uris[0], lines.get(position) if isinstance(position, int) else None)
        elif element.get("source") == "grant" and uris[1]:
            where = _location(uris[1], None)
        else:
            continue
        text = f"{element.get('source')} {element.get('name')} statement {statement}: {element.get('part')}"
        related.append({"id": n, **where, "message": {"text": text}})
    if related:
        result["relatedLocations"] = related
    fixes = []
    end = policy_text.count("\n") + (0 if policy_text.endswith("\n") else 1)
    for change in remediation:
        if change.get("kind") != "key-policy" or not change.get("verified"):
            continue
        replacement = {
            "deletedRegion": {"startLine": 1, "endLine": max(1, end)},
            "insertedContent": {"text": _as_file(policy_text, change["key_policy"])},
        }
        fixes.append(
            {
                "description": {"text": change["summary"]},
                "artifactChanges": [{"artifactLocation": {"uri": uris[0]}, "replacements": [replacement]}],
            }
        )
    if fixes:
        result["fixes"] = fixes


def _as_file(policy_text: str, revised: str) -> str:
    """The revised policy in the file's own shape: the policy itself, or what `aws kms
    get-key-policy` prints ({"Policy": "<the policy as a string>", "PolicyName": "default"})."""
    try:
        doc = json.loads(policy_text)
    except (ValueError, RecursionError):
        return revised + "\n"
    if isinstance(doc, dict) and isinstance(doc.get("Policy"), str):
        compact = json.dumps(json.loads(revised), separators=(",", ":"), ensure_ascii=False)
        return json.dumps({**doc, "Policy": compact}, indent=4, ensure_ascii=False) + "\n"
    return revised + "\n"


def sarif_log(
    findings: Sequence[Finding],
    lints: Sequence[Lint],
    key_policy: str,
    grants: str | None = None,
    explained: Mapping[str, tuple[list[Any], list[Any]]] | None = None,
) -> dict[str, Any]:
    """The SARIF 2.1.0 log of one `evaluate` run. `explained`: finding id -> its explanation and
    remediation (`evaluate --explain`): related locations and fixes."""
    policy_text = Path(key_policy).read_text(encoding="utf-8")
    grants_text = Path(grants).read_text(encoding="utf-8") if grants else ""
    statements = statement_lines(policy_text)
    lines = _canonical_lines(statements, policy_text) if explained else {}
    sids = _sid_positions(policy_text) if explained else {}
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}

    def rule(rule_id: str, name: str, text: str, severity: str) -> int:
        if rule_id not in index:
            index[rule_id] = len(rules)
            rules.append(
                {
                    "id": rule_id,
                    "name": name,
                    "shortDescription": {"text": text},
                    "help": {
                        "text": 'README "Access levels" and "`kmsaudit evaluate`" (--lints) explain each rule '
                        "and what to change."
                    },
                    "defaultConfiguration": {"level": _LEVEL.get(severity, "warning")},
                }
            )
        return index[rule_id]

    results = []
    for f in findings:
        rule_id = f"{f.kind}/{f.access}" if f.kind == "access" else "unparseable/none"
        name, text, default = _RULES.get(rule_id, ("CrossAccountAccess", "Cross-account access to the key", "high"))
        if f.via == ("grant",) and grants:
            where = _location(_uri(grants), _grant_line(grants_text, f.principal))
        else:
            where = _location(_uri(key_policy), _statement_line(f, statements))
        actions = ", ".join(f.actions) or "no action"
        message = f"{f.principal} ({f.zone}) has {f.access} access via {'+'.join(f.via)}: {actions}" + (
            " when its conditions hold" if f.conditional else ""
        )
        results.append(
            {
                "ruleId": rule_id,
                "ruleIndex": rule(rule_id, name, text, default),
                "level": _LEVEL.get(f.severity, "warning"),
                "message": {"text": message},
                "locations": [where],
                "partialFingerprints": {"kmsauditFindingId/v1": f.id},
                "properties": {"kmsaudit": f.to_dict()},
            }
        )
        if explained and f.id in explained:
            explanation, remediation = explained[f.id]
            uris = (_uri(key_policy), _uri(grants) if grants else None)
            _explained(results[-1], explanation, remediation, uris, lines, sids, policy_text)
            results[-1]["properties"] = {
                "kmsaudit": f.to_dict() | {"explanation": explanation, "remediation": remediation}
            }
    for lint in lints:
        rule_id = f"lint/{lint.kind}"
        line = next((ln for ln, stmt in statements if lint.sid and stmt.get("Sid") == lint.sid), None)
        results.append(
            {
                "ruleId": rule_id,
                "ruleIndex": rule(rule_id, lint.kind, f"kmsaudit lint: {lint.kind}", "medium"),
                "level": "warning",
                "message": {"text": lint.message},
                "locations": [_location(_uri(key_policy), line)],
                "properties": {"kmsaudit": lint.to_dict()},
            }
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "kmsaudit",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
