"""SPEC §4's promises for `explanation` and `remediation`, checked on any key and scope without
trusting the code that makes them (issue #27): used by helpers.run, so every evaluator test case
checks them too, and by tests/evaluator/test_explain.py on a generated estate.

- every finding has a non-empty explanation whose elements have SPEC §4's fields;
- every finding that rests on the key policy offers at least one remediation;
- every key-policy remediation, evaluated again here (evaluate_keys, not the remediation's own
  check): removes the finding, leaves every other finding of the key as it was except those in
  `also_changes`, differs from the policy only in statements the explanation names, and keeps
  every statement that gives the key's own account access (the account's administration).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections import Counter
from typing import Any

from kmsaudit.evaluator import AuditScope, evaluate_keys
from kmsaudit.evaluator.policy import canonical_policy
from kmsaudit.evaluator.remedy import administrators, explain_and_remedy
from kmsaudit.model import KeyRecord

SOURCES = {"key-policy", "iam-policy", "permissions-boundary", "scp", "rcp", "grant"}
PARTS = {"grants", "confines", "denies-others", "undecided"}
FIELDS = {"source", "name", "statement", "line", "effect", "part", "conditions"}


def _statements(text: str) -> list[Any]:
    raw = json.loads(text).get("Statement")
    return raw if isinstance(raw, list) else [raw]


def _text(stmt: Any) -> str:
    return json.dumps(stmt, sort_keys=True)


def _own(stmt: Any, account: str) -> set[str]:
    """The key's own account's principals an Allow that may include kms:PutKeyPolicy names
    ("*" for a statement open to anyone): its administrators, by the text alone."""
    if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow" or "NotPrincipal" in stmt:
        return set()
    actions = stmt.get("Action", [])
    actions = actions if isinstance(actions, list) else [actions]
    if not any(isinstance(a, str) and fnmatch.fnmatchcase("kms:putkeypolicy", a.lower()) for a in actions):
        return set()
    principal = stmt.get("Principal")
    if principal == "*":
        return {"*"}
    aws = principal.get("AWS", []) if isinstance(principal, dict) else []
    aws = aws if isinstance(aws, list) else [aws]
    return {v for v in aws if isinstance(v, str) and (v == "*" or v == account or f"::{account}:" in v)}


def _locks_out(canonical: str, explanation: list[dict[str, Any]], key: KeyRecord, scope: AuditScope) -> bool:
    positions = {e["statement"] for e in explanation if e["source"] == "key-policy" and e["effect"] == "Allow"}
    doc = json.loads(canonical)
    listed = doc["Statement"] if isinstance(doc.get("Statement"), list) else [doc.get("Statement")]
    kept = [
        s
        for i, s in enumerate(listed)
        if i not in positions and not (isinstance(s, dict) and s.get("Sid") in positions)
    ]
    return not administrators(json.dumps({**doc, "Statement": kept}), key, scope)


def check_explained(key: KeyRecord, scope: AuditScope) -> int:
    """Asserts the promises for one key; returns the key-policy remediations checked."""
    findings = {f.id: f for f in evaluate_keys([key], scope).findings}
    explained = explain_and_remedy(key, scope)
    assert {f.id for f, _, _ in explained} == set(findings), "explain must see the findings a scan sees"
    canonical = canonical_policy(
        key.policy if isinstance(key.policy, str) or key.policy is None else json.dumps(key.policy)
    )
    checked = 0
    for finding, explanation, remediation in explained:
        assert explanation, f"no explanation for {finding}"
        for element in explanation:
            assert set(element) >= FIELDS, element
            assert element["source"] in SOURCES and element["part"] in PARTS, element
        assert any(e["part"] in ("grants", "undecided") for e in explanation), explanation
        if "key-policy" in finding.via and finding.kind == "access" and not remediation:
            # Only excused when the statements it rests on are also all that administer the key:
            # removing them would lock the account out, and no smaller change is known.
            assert canonical is not None and _locks_out(canonical, explanation, key, scope), (
                f"no remediation for {finding} ({explanation})"
            )
        named = set()
        for element in explanation:
            if element["source"] == "key-policy" and element["statement"] is not None:
                named.add(element["statement"])
        for change in remediation:
            assert change["kind"] in ("key-policy", "grant", "iam-policy") and change["summary"], change
            if change["kind"] != "key-policy":
                continue
            checked += 1
            assert change["verified"] is True
            revised = change["key_policy"]
            after = {f.id: f for f in evaluate_keys([dataclasses.replace(key, policy=revised)], scope).findings}
            assert finding.id not in after, f"{change['summary']} leaves {finding}"
            for left in after.values():  # nor the same access by another path (an id names its path)
                same = (left.principal, left.principal_account, left.access)
                assert same != (finding.principal, finding.principal_account, finding.access) or not (
                    set(left.actions) & set(finding.actions)
                ), f"{change['summary']} leaves {left}"
            for other, before in findings.items():
                if other != finding.id and other not in change["also_changes"]:
                    assert after.get(other) == before, f"{change['summary']} changes {before} unlisted"
            assert canonical is not None
            original = _statements(canonical)
            kept = Counter(_text(s) for s in _statements(revised))
            for position, stmt in enumerate(original):
                sid = stmt.get("Sid") if isinstance(stmt, dict) else None
                if position in named or (sid and sid in named):
                    continue
                assert kept[_text(stmt)] > 0, (
                    f"{change['summary']} touched statement {position}, not in the explanation"
                )
                kept[_text(stmt)] -= 1
            # The statements that name the account's administrators stay (their other principals may
            # go); where only "*" statements administer the key, one of them stays.
            named_admins = any(_own(stmt, key.account) - {"*"} for stmt in original)
            for stmt in original:
                admins = _own(stmt, key.account)
                if named_admins:
                    admins -= {"*"}
                if not admins:
                    continue
                rest = {k: v for k, v in stmt.items() if k not in ("Principal", "Condition")}
                assert any(
                    admins <= _own(s, key.account)
                    and {k: v for k, v in s.items() if k not in ("Principal", "Condition")} == rest
                    for s in _statements(revised)
                ), f"{change['summary']} removes the key's own account's administration ({sorted(admins)})"
    return checked
