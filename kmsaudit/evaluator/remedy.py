"""The smallest changes that remove a finding, each verified (SPEC §4 `remediation`).

Candidates come from the finding's explanation only: take the principal out of a statement that
grants, confine a `"*"` statement to the organization (or the audited accounts), remove the
statement; revoke a grant; deny the actions on this key in the IAM policy that grants them. Each
is verified by evaluating the changed documents again: the finding is gone, every other finding
of the key is unchanged except those listed in `also_changes`, no new access appears, and the
key's own account keeps administering the key (kms:PutKeyPolicy, as before the change). A
candidate that fails any of these is not offered.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from kmsaudit.evaluator.access import evaluate_statements, resource_matches
from kmsaudit.evaluator.actions import bit
from kmsaudit.evaluator.conditions import Context
from kmsaudit.evaluator.decide import evaluate_key
from kmsaudit.evaluator.explain import Element, Located, explain_key, public
from kmsaudit.evaluator.match import ACCOUNT_RE, root_arn
from kmsaudit.evaluator.policy import PolicyParseError, load_document, parse_policy
from kmsaudit.evaluator.scope import AuditScope
from kmsaudit.evaluator.subjects import account_subject, resource_context
from kmsaudit.model import Finding, IamPrincipal, KeyRecord, PolicyDocument

Remediation = dict[str, Any]
MAX_KEY_POLICY = 3  # key-policy changes offered per finding (the smallest first)
_ADMIN = bit("kms:PutKeyPolicy")


def administers(text: str, key: KeyRecord, scope: AuditScope) -> bool:
    """Does the key's own account still administer the key under this policy (kms:PutKeyPolicy
    for its root, which is what lets its IAM policies and administrators manage the key)?"""
    try:
        stmts = tuple(s for s in parse_policy(text).statements if resource_matches(s, key.arn))
    except PolicyParseError:
        return False
    subject = account_subject(key.account, scope)
    tags = {k.lower(): v for k, v in key.tags} if key.tags else {}
    ctx = Context(subject.context, resource_context(key, scope), tags)
    return bool(evaluate_statements(stmts, subject, ctx, "key-policy").sure & _ADMIN)


def _essence(f: Finding) -> tuple[Any, ...]:
    return (*f[:12], f.conditional_actions)


def _changes(before: list[Finding], after: list[Finding], target: str) -> tuple[int, list[str]] | None:
    """None if the change does not remove `target` or gives any principal more than before;
    else how many other findings it removes or alters, and their ids followed by those of the
    findings it adds (access "*" had, now shown for the principals the change still admits)."""
    old = {f.id: f for f in before}
    new = {f.id: f for f in after}
    if target in new:
        return None
    had: dict[tuple[str, str], set[str]] = {}
    anyone: set[str] = set()  # what "*" had: every principal had that much
    for f in before:
        had.setdefault((f.principal, f.principal_account), set()).update(f.actions)
        if f.principal == "*":
            anyone.update(f.actions)
    for f in after:
        if not set(f.actions) <= had.get((f.principal, f.principal_account), set()) | anyone:
            return None  # never trade one access for another
    also = sorted(i for i, f in old.items() if i != target and (i not in new or _essence(new[i]) != _essence(f)))
    lost = len(also)  # findings removed or altered; then those the change shows apart from "*"
    also += sorted(i for i in new if i not in old)
    return lost, also


def _values(principal: Any) -> Iterator[tuple[str, list[str]]]:
    if isinstance(principal, dict):
        for kind, values in principal.items():
            yield kind, values if isinstance(values, list) else [values]


def _naming(finding: Finding) -> list[Callable[[str, str], bool]]:
    """Ways a Principal value can name the finding's principal: exactly, then (for an IAM
    principal) its account."""
    p, account = finding.principal, finding.principal_account
    exact: Callable[[str, str], bool] = lambda kind, v: v == p or (kind == "Service" and v.lower() == p.lower())  # noqa: E731
    ways = [exact]
    if ACCOUNT_RE.match(account) and p.startswith("arn:") and p != root_arn(account):
        ways.append(lambda kind, v: kind == "AWS" and v in (account, root_arn(account), p))
    elif ACCOUNT_RE.match(account) and p == root_arn(account):
        ways[0] = lambda kind, v: kind == "AWS" and v in (account, p)
    return ways


def _without(stmt: dict[str, Any], names: Callable[[str, str], bool]) -> dict[str, Any] | bool | None:
    """The statement without the principal values `names` matches: a new statement, None when
    nothing would remain (remove it), False when it names none of them."""
    principal = stmt.get("Principal")
    if not isinstance(principal, dict):
        return False
    kept: dict[str, Any] = {}
    removed = False
    for kind, values in _values(principal):
        left = [v for v in values if not (isinstance(v, str) and names(kind, v))]
        removed = removed or len(left) < len(values)
        if left:
            kept[kind] = left if isinstance(principal[kind], list) or len(left) > 1 else left[0]
    if not removed:
        return False
    if not kept:
        return None
    return {**stmt, "Principal": kept}


def _named_values(stmt: Any, names: Callable[[str, str], bool]) -> list[str]:
    principal = stmt.get("Principal") if isinstance(stmt, dict) else None
    return [v for kind, values in _values(principal) for v in values if isinstance(v, str) and names(kind, v)]


def _is_any(stmt: dict[str, Any]) -> bool:
    principal = stmt.get("Principal")
    return principal == "*" or any(v == "*" for kind, vs in _values(principal) if kind == "AWS" for v in vs)


def _confined(stmt: dict[str, Any], key: KeyRecord, scope: AuditScope) -> tuple[dict[str, Any], str] | None:
    org = scope.organization
    if org is not None:
        cond_key, values, what = "aws:PrincipalOrgID", [org.org_id], f"the organization {org.org_id}"
    else:
        values = sorted(scope.trusted | {key.account})
        cond_key, what = "aws:PrincipalAccount", f"the audited and trusted accounts ({', '.join(values)})"
    condition = copy.deepcopy(stmt.get("Condition") or {})
    if not isinstance(condition, dict):
        return None
    block = condition.setdefault("StringEquals", {})
    if not isinstance(block, dict) or any(k.lower() == cond_key.lower() for k in block):
        return None
    block[cond_key] = values if len(values) > 1 else values[0]
    return {**stmt, "Condition": condition}, what


class Remedies:
    """Remediations of one key's findings."""

    def __init__(self, key: KeyRecord, scope: AuditScope, canonical: str | None, findings: list[Finding]) -> None:
        self.key, self.scope, self.findings = key, scope, findings
        self.doc: dict[str, Any] | None = None
        if canonical is not None:
            try:
                self.doc = load_document(canonical)
            except PolicyParseError:
                self.doc = None
        self.admin = canonical is not None and administers(canonical, key, scope)

    def _statements(self) -> list[Any]:
        assert self.doc is not None
        raw = self.doc.get("Statement")
        return list(raw) if isinstance(raw, list) else [raw]

    def _revised(self, edits: dict[int, Any]) -> str:
        """The policy with statement positions replaced (a value of None removes it)."""
        assert self.doc is not None
        stmts = [edits.get(i, s) for i, s in enumerate(self._statements())]
        doc = {**self.doc, "Statement": [s for s in stmts if s is not None]}
        return json.dumps(doc, indent=2, ensure_ascii=False)

    def _check(self, target: Finding, key: KeyRecord, scope: AuditScope | None = None) -> tuple[int, list[str]] | None:
        after = evaluate_key(key, scope or self.scope)[0]
        return _changes(self.findings, after, target.id)

    def key_policy(self, target: Finding, elements: list[Element]) -> list[Remediation]:
        if self.doc is None or "key-policy" not in target.via:
            return []
        stmts = self._statements()
        granting: list[Located] = [
            e["_at"] for e in elements if e["source"] == "key-policy" and e["effect"] == "Allow" and "_at" in e
        ]
        labels_at = {
            loc.position: f'"{loc.label}"' if isinstance(loc.label, str) else str(loc.label) for loc in granting
        }

        def labels(edits: dict[int, Any]) -> str:
            return ", ".join(labels_at[i] for i in sorted(edits))

        candidates: list[tuple[dict[int, Any], str]] = []
        for ways in _naming(target):
            edits: dict[int, Any] = {}
            for loc in granting:
                changed = _without(stmts[loc.position], ways) if isinstance(stmts[loc.position], dict) else False
                if changed is not False:
                    edits[loc.position] = changed
            if edits:
                named = sorted({v for i in edits for v in _named_values(stmts[i], ways)})
                emptied = {i: e for i, e in edits.items() if e is None}
                what = f"take {', '.join(named)} out of statement {labels(edits)}"
                if emptied and len(emptied) == len(edits):
                    what = f"remove statement {labels(edits)} (it names only {', '.join(named)})"
                candidates.append((edits, what))
        wild = [loc for loc in granting if isinstance(stmts[loc.position], dict) and _is_any(stmts[loc.position])]
        edits, whats = {}, set()
        for loc in wild:
            confined = _confined(stmts[loc.position], self.key, self.scope)
            if confined is not None:
                edits[loc.position], what = confined
                whats.add(what)
        if edits:
            candidates.append((edits, f'confine the "*" statement {labels(edits)} to {" and ".join(sorted(whats))}'))
        removal = {loc.position: None for loc in granting}
        if removal:
            candidates.append((removal, f"remove statement {labels(removal)}"))
        ranked: list[tuple[int, Remediation]] = []
        seen: set[str] = set()
        for edits, summary in candidates:
            text = self._revised(edits)
            if text in seen or (self.admin and not administers(text, self.key, self.scope)):
                continue
            seen.add(text)
            checked = self._check(target, dataclasses.replace(self.key, policy=text))
            if checked is None:
                continue
            ranked.append(
                (
                    checked[0],
                    {
                        "kind": "key-policy",
                        "summary": summary,
                        "key_policy": text,
                        "command": f"aws kms put-key-policy --key-id {self.key.arn} --policy-name default "
                        "--policy file://policy.json",
                        "verified": True,
                        "also_changes": checked[1],
                    },
                )
            )
        ranked.sort(key=lambda r: r[0])  # stable: the smaller edit first among equals
        return [r for _, r in ranked[:MAX_KEY_POLICY]]

    def grants(self, target: Finding, elements: list[Element]) -> list[Remediation]:
        out = []
        for element in elements:
            if element["source"] != "grant":
                continue
            grant_id = element["name"]
            kept = tuple(g for g in self.key.grants if g.grant_id != grant_id)
            checked = self._check(target, dataclasses.replace(self.key, grants=kept))
            out.append(
                {
                    "kind": "grant",
                    "summary": f"revoke grant {grant_id} ({target.principal})",
                    "grant_id": grant_id,
                    "command": f"aws kms revoke-grant --key-id {self.key.arn} --grant-id {grant_id}",
                    "verified": checked is not None,
                    "also_changes": checked[1] if checked else [],
                }
            )
        return out

    def iam(self, target: Finding, elements: list[Element]) -> list[Remediation]:
        """Deny the finding's actions on this key in the first IAM policy that grants them."""
        cp = self.scope.principal(target.principal)
        element = next((e for e in elements if e["source"] == "iam-policy" and e["effect"] == "Allow"), None)
        if cp is None or element is None:
            return []
        docs = list(cp.source.policies)
        at = next((i for i, d in enumerate(docs) if d.name == element["name"]), None)
        if at is None:
            return []
        try:
            doc = load_document(docs[at].document)
        except PolicyParseError:
            return []
        raw = doc.get("Statement")
        stmts = list(raw) if isinstance(raw, list) else [raw] if raw is not None else []
        deny = {
            "Sid": "KmsAuditDeny" + "".join(ch for ch in self.key.key_id if ch.isalnum())[:12],
            "Effect": "Deny",
            "Action": list(target.actions),
            "Resource": self.key.arn,
        }
        revised = json.dumps({**doc, "Statement": [*stmts, deny]}, indent=2, ensure_ascii=False)
        name = docs[at].name
        checked = self._check(target, self.key, self._scope_with(cp.source.arn, name, revised))
        return [
            {
                "kind": "iam-policy",
                "summary": f"in {element['name']} of {target.principal}, deny {', '.join(target.actions)} on this key",
                "principal": target.principal,
                "policy": element["name"],
                "statement": element["statement"],
                "iam_policy": revised,
                "command": _iam_command(cp.source, name),
                "verified": checked is not None,
                "also_changes": checked[1] if checked else [],
            }
        ]

    def _scope_with(self, arn: str, name: str, revised: str) -> AuditScope:
        """The scope with the policy `name` revised: for the principal `arn` if it is its own
        inline policy, else (a managed or a group's policy) for every principal that has it."""
        shared = not name.startswith("inline:")
        principals: list[IamPrincipal] = []
        for iam in self.scope.iam.values():
            for cp in iam.principals:
                source = cp.source
                if shared or source.arn == arn:
                    docs = tuple(PolicyDocument(d.name, revised) if d.name == name else d for d in source.policies)
                    source = dataclasses.replace(source, policies=docs)
                principals.append(source)
        return AuditScope(
            principals,
            audited_accounts=self.scope.audited,
            trusted_accounts=self.scope.trusted,
            organization=self.scope.organization,
        )

    def remediate(self, target: Finding, elements: list[Element]) -> list[Remediation]:
        if target.kind != "access":
            return []
        return self.key_policy(target, elements) + self.grants(target, elements) + self.iam(target, elements)


def _iam_command(principal: IamPrincipal, name: str) -> str:
    """The AWS CLI command that puts the revised policy (saved as iam-policy.json) in place."""
    document = "--policy-document file://iam-policy.json"
    group, _, rest = name.partition("/") if name.startswith("group:") else ("", "", name)
    if rest.startswith("inline:"):
        policy_name = rest[len("inline:") :]
        if group:
            return (
                f"aws iam put-group-policy --group-name {group[len('group:') :]} --policy-name {policy_name} {document}"
            )
        kind = "role" if principal.kind == "role" else "user"
        return f"aws iam put-{kind}-policy --{kind}-name {principal.name} --policy-name {policy_name} {document}"
    return f"aws iam create-policy-version --policy-arn {rest} {document} --set-as-default"


def explain_and_remedy(key: KeyRecord, scope: AuditScope) -> list[tuple[Finding, list[Element], list[Remediation]]]:
    """Every finding of the key with its explanation and its verified remediations (SPEC §4)."""
    findings, explained, canonical = explain_key(key, scope)
    remedies = Remedies(key, scope, canonical, findings)
    return [(f, public(explained[f.id]), remedies.remediate(f, explained[f.id])) for f in findings]
