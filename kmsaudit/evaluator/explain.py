"""Why a finding exists (SPEC §4 `explanation`): every statement and grant its decision rests
on, in evaluation order, with the part each plays and its conditions.

Worked out only when asked (`kmsaudit explain`, `evaluate --explain`): the key is evaluated again
with a trace of whom each finding was decided for (decide.evaluate_key), and each statement that
could matter is then asked about that subject on its own. A scan never pays for it.

Parts: `grants` (an Allow that gives some of the finding's actions), `confines` (a Deny that takes
some away from this principal), `denies-others` (a Deny over these actions that does not reach
this principal: why it does not stop it), `undecided` (an Allow or a Deny that applies only if
conditions nobody can decide at audit time hold).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kmsaudit.evaluator.access import Subject, principal_matches, resource_matches
from kmsaudit.evaluator.actions import CROSS_ACCOUNT_MASK, bit
from kmsaudit.evaluator.canonical import pretty_policy
from kmsaudit.evaluator.conditions import FALSE, TRUE, Context, evaluate_block
from kmsaudit.evaluator.decide import evaluate_key
from kmsaudit.evaluator.findings import Trace
from kmsaudit.evaluator.policy import PolicyParseError, load_document, statements_as_written
from kmsaudit.evaluator.scope import AuditScope
from kmsaudit.evaluator.statements import ConditionClause, Statement
from kmsaudit.evaluator.subjects import resource_context
from kmsaudit.model import Finding, KeyRecord

Element = dict[str, Any]
_RANK = {"grants": 0, "confines": 1, "undecided": 2, "denies-others": 3}


@dataclass(frozen=True)
class Located:
    """A statement of a named document: where a person finds it."""

    source: str  # key-policy | iam-policy | permissions-boundary | scp | rcp
    name: str
    label: str | int  # Sid, or position in the document (when no Sid, or more than one has it)
    line: int | None
    stmt: Statement
    position: int = 0  # in the document's Statement list


def statement_lines(pretty: str) -> list[int]:
    """1-based line of each item of the top-level "Statement" list in a policy pretty-printed
    with an indent of 2 (as `kmsaudit history` prints it), or of the one statement object."""
    lines = pretty.splitlines()
    starts: list[int] = []
    inside = False
    for number, line in enumerate(lines, 1):
        if not inside:
            if line.startswith('  "Statement": ['):
                inside = not line.rstrip().endswith("]")
            elif line.startswith('  "Statement": {'):
                return [number]
            continue
        if line.startswith("  ]"):
            break
        if line.startswith("    ") and not line.startswith("     ") and line[4:5] not in ("}", "]"):
            starts.append(number)
    return starts


def locate(raw: Any, source: str, name: str, pretty: str | None = None) -> list[Located]:
    """The compiled statements of one document with their Sid (or position) and line. `pretty`:
    the text the line refers to (default: the document as stored, indented by 2)."""
    try:
        doc = load_document(raw)
        written = statements_as_written(doc)
    except PolicyParseError:
        return []
    if pretty is None:
        pretty = json.dumps(doc, indent=2, ensure_ascii=False)
    lines = statement_lines(pretty)
    sids = Counter(stmt.sid for _, stmt in written if stmt is not None and stmt.sid)
    out = []
    for position, stmt in written:
        if stmt is not None:  # a Sid names a statement only where no other has it
            line = lines[position] if position < len(lines) else None
            label = stmt.sid if stmt.sid and sids[stmt.sid] == 1 else position
            out.append(Located(source, name, label, line, stmt, position))
    return out


def _clause(clause: ConditionClause, open_: bool) -> dict[str, Any]:
    return {"operator": clause.operator, "key": clause.key, "values": list(clause.values), "open": open_}


def _judge(stmt: Statement, subject: Subject, ctx: Context) -> tuple[int, int, set[int], list[dict[str, Any]]]:
    """What one statement does for the subject: actions it applies to for sure, only maybe, the
    open clauses (by position), and an undecided principal match's description."""
    matched, extra = principal_matches(stmt, subject)
    if matched == FALSE:
        return 0, 0, set(), []
    sure = maybe = 0
    open_clauses: set[int] = set()
    for mask, part_clauses, _marker in stmt.parts:
        clauses = stmt.conditions if part_clauses is None else part_clauses
        state, undecided = (TRUE, ()) if not clauses else evaluate_block(clauses, ctx)
        if state == FALSE:
            continue
        if state == TRUE and matched == TRUE:
            sure |= mask
        else:
            maybe |= mask
            open_clauses.update(i for i, c in enumerate(stmt.conditions) if c in undecided)
    maybe &= ~sure
    notes = [dict(extra)] if extra is not None and (sure | maybe) else []
    for note in notes:
        note["values"] = list(note.get("values", ()))
        note["open"] = True
    return sure, maybe, open_clauses, notes


def _elements(located: Iterable[Located], subject: Subject, ctx: Context, wanted: int) -> tuple[list[Element], int]:
    """Elements of one policy for one subject, and the actions of `wanted` it leaves allowed.
    `wanted`: the finding's actions (what survived every Deny); a Deny is shown when it takes
    away any cross-account action an Allow gave (`confines`)."""
    judged = [(loc, *_judge(loc.stmt, subject, ctx)) for loc in located if loc.stmt.action_mask & CROSS_ACCOUNT_MASK]
    allowed = 0
    for loc, sure, maybe, *_ in judged:
        if loc.stmt.allow:
            allowed |= (sure | maybe) & CROSS_ACCOUNT_MASK
    out: list[Element] = []
    denied = 0
    for loc, sure, maybe, open_clauses, notes in judged:
        stmt = loc.stmt
        if stmt.allow:
            part = "grants" if sure & wanted else "undecided" if maybe & wanted else None
        elif sure & allowed:
            part, denied = "confines", denied | sure
        elif maybe & allowed & wanted:
            part = "undecided"
        elif not (sure | maybe) and stmt.action_mask & wanted:
            part = "denies-others"
        else:
            part = None
        if part is None:
            continue
        conditions = [_clause(c, i in open_clauses) for i, c in enumerate(stmt.conditions)] + notes
        out.append(
            {
                "_at": loc,
                "source": loc.source,
                "name": loc.name,
                "statement": loc.label,
                "line": loc.line,
                "effect": "Allow" if stmt.allow else "Deny",
                "part": part,
                "conditions": conditions,
            }
        )
    return out, allowed & wanted & ~denied


def _levels(organization: Any, account: str, what: str, key_arn: str) -> list[list[Located]]:
    levels = getattr(organization, what + "s", {}).get(account, ()) if organization is not None else ()
    out = []
    for depth, docs in enumerate(levels):
        level: list[Located] = []
        for n, doc in enumerate(docs):
            named = doc.get("Id") if isinstance(doc, dict) else None
            located = locate(doc, what, str(named or f"level {depth} policy {n}"))
            level.extend(loc for loc in located if resource_matches(loc.stmt, key_arn))
        out.append(level)
    return out


def _grant_element(grant: Any) -> Element:
    conditions = []
    if grant.constraints:
        for operator, pairs in sorted(grant.constraints.items()):
            conditions.append({"operator": operator, "key": "kms:EncryptionContext", "values": [pairs], "open": True})
    return {
        "source": "grant",
        "name": grant.grant_id,
        "statement": None,
        "line": None,
        "effect": "Allow",
        "part": "undecided" if conditions else "grants",
        "conditions": conditions,
        "operations": sorted(grant.operations),
    }


def unreadable_policy(conditions: Iterable[Mapping[str, Any]]) -> list[Element]:
    """The explanation of a finding whose key policy could not be read: the reason it records."""
    reasons = [str(c.get("error")) for c in conditions if c.get("error")]
    return [
        {
            "source": "key-policy",
            "name": "default",
            "statement": None,
            "line": None,
            "effect": None,
            "part": "undecided",
            "conditions": [{"operator": "unreadable", "key": "", "values": reasons or ["unreadable"], "open": True}],
        }
    ]


class KeyExplainer:
    """Explanations of one key's findings (its policy located once)."""

    def __init__(self, key: KeyRecord, scope: AuditScope, canonical: str | None) -> None:
        self.key, self.scope = key, scope
        self.key_policy: list[Located] = []
        if canonical is not None:
            located = locate(canonical, "key-policy", "default", pretty_policy(canonical))
            self.key_policy = [loc for loc in located if resource_matches(loc.stmt, key.arn)]
        self.resource = resource_context(key, scope)
        self.tags = {k.lower(): v for k, v in key.tags} if key.tags else {}

    def _iam(self, cp: Any) -> list[Located]:
        out: list[Located] = []
        for doc in cp.source.policies:
            out.extend(
                loc for loc in locate(doc.document, "iam-policy", doc.name) if resource_matches(loc.stmt, self.key.arn)
            )
        return out

    def path(self, path: tuple[Any, ...], wanted: int) -> list[Element]:
        kind, subject = path[0], path[1]
        ctx = Context(subject.context, self.resource, self.tags)
        if kind == "grant":
            grant, grantee = path[2], path[3]
            denies = [loc for loc in self.key_policy if not loc.stmt.allow]
            out = [_grant_element(grant)]
            out += _elements(denies, subject, ctx, wanted)[0]
            if grantee is not None:
                out += _elements([loc for loc in self._iam(grantee) if not loc.stmt.allow], subject, ctx, wanted)[0]
            return out
        out, left = _elements(self.key_policy, subject, ctx, wanted)
        if kind == "iam" and left:
            cp = path[2]
            more, left = _elements(self._iam(cp), subject, ctx, left)
            out += more
            if cp.source.boundary is not None and left:
                boundary = locate(cp.source.boundary.document, "permissions-boundary", cp.source.boundary.name)
                more, left = _elements(boundary, subject, ctx, left)
                out += more
            account = cp.source.account
            for what in ("scp", "rcp"):
                for level in _levels(
                    self.scope.organization, self.key.account if what == "rcp" else account, what, self.key.arn
                ):
                    if left:
                        more, left = _elements(level, subject, ctx, left)
                        out += more
        return out if left else []

    def explain(self, finding: Finding, paths: list[tuple[Any, ...]]) -> list[Element]:
        """The finding's elements; each holds, under "_at", the Located statement it came from
        (remedy.py edits those; `public` drops it)."""
        if finding.kind == "unparseable":
            return unreadable_policy(finding.conditions)
        wanted = 0
        for action in finding.actions:
            wanted |= bit(action)
        merged: dict[tuple[Any, ...], Element] = {}
        for path in paths:
            for element in self.path(path, wanted):
                marker = (element["source"], element["name"], element["statement"])
                before = merged.get(marker)
                if before is None:
                    merged[marker] = element
                    continue
                if _RANK[element["part"]] < _RANK[before["part"]]:
                    before["part"] = element["part"]
                for condition in element["conditions"]:
                    if condition not in before["conditions"]:
                        before["conditions"].append(condition)
        order = {"key-policy": 0, "grant": 1, "iam-policy": 2, "permissions-boundary": 3, "scp": 4, "rcp": 5}
        return sorted(merged.values(), key=lambda e: order[e["source"]])


def public(elements: list[Element]) -> list[Element]:
    """Elements as SPEC §4 shows them (without the statement object each came from)."""
    return [{k: v for k, v in e.items() if k != "_at"} for e in elements]


def explain_key(key: KeyRecord, scope: AuditScope) -> tuple[list[Finding], dict[str, list[Element]], str | None]:
    """The key's findings, each one's explanation by finding id (elements with "_at"), and the
    key policy's canonical text."""
    trace: Trace = {}
    findings, _, _, canonical = evaluate_key(key, scope, trace)
    explainer = KeyExplainer(key, scope, canonical)
    explained = {
        f.id: explainer.explain(f, trace.get((f.principal, f.access, f.principal_account), [])) for f in findings
    }
    return findings, explained, canonical
