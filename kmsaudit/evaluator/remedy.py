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
from collections.abc import Callable, Collection, Iterator
from typing import Any

from kmsaudit.evaluator.access import evaluate_statements, resource_matches
from kmsaudit.evaluator.actions import bit
from kmsaudit.evaluator.conditions import Context
from kmsaudit.evaluator.decide import evaluate_key
from kmsaudit.evaluator.explain import Element, Located, explain_key, public
from kmsaudit.evaluator.match import ACCOUNT_RE, root_arn
from kmsaudit.evaluator.policy import PolicyParseError, load_document, parse_policy
from kmsaudit.evaluator.scope import AuditScope
from kmsaudit.evaluator.subjects import account_subject, named_subject, resource_context
from kmsaudit.model import Finding, IamPrincipal, KeyRecord, PolicyDocument

Remediation = dict[str, Any]
MAX_KEY_POLICY = 3  # key-policy changes offered per finding (the smallest first)
_ADMIN = bit("kms:PutKeyPolicy")


def administrators(text: str | None, key: KeyRecord, scope: AuditScope) -> frozenset[str]:
    """Who of the key's own account may change the key policy (kms:PutKeyPolicy, for sure or on
    conditions) under this policy: its root (what lets its IAM policies administer the key) and
    every user, role or session of the account a statement names. A change must keep each."""
    if text is None:
        return frozenset()
    try:
        stmts = tuple(s for s in parse_policy(text).statements if resource_matches(s, key.arn))
    except PolicyParseError:
        return frozenset()
    tags = {k.lower(): v for k, v in key.tags} if key.tags else {}
    resource = resource_context(key, scope)
    subjects = [account_subject(key.account, scope)]
    for stmt in stmts:
        for ref in stmt.principals.refs if stmt.principals is not None else ():
            if ref.account == key.account and ref.kind in ("iam", "session"):
                subjects.append(named_subject(ref, scope))
    found = set()
    for subject in subjects:
        access = evaluate_statements(stmts, subject, Context(subject.context, resource, tags), "key-policy")
        if access.any & _ADMIN:
            found.add(subject.principal)
    return frozenset(found)


def _essence(f: Finding) -> tuple[Any, ...]:
    return (*f[:12], f.conditional_actions)


def _changes(before: list[Finding], after: list[Finding], target: str) -> tuple[int, list[str]] | None:
    """None if the change leaves the target's access (the same principal, at the same level, any
    of its actions, by any path: a finding's id names its path) or gives any principal more than
    before; else how many other findings it removes or alters, and their ids followed by those of
    the findings it adds (access "*" had, now shown for the principals the change still admits)."""
    old = {f.id: f for f in before}
    new = {f.id: f for f in after}
    gone = old.get(target)
    if target in new or gone is None:
        return None
    for f in after:
        if (f.principal, f.principal_account, f.access) == (gone.principal, gone.principal_account, gone.access):
            if set(f.actions) & set(gone.actions):
                return None  # the same access by another path (a grant beside the policies)
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


def _label(loc: Located, stmt: Any) -> str:
    """A statement as a summary names it: its Sid, else its position in the canonical policy and
    what it says (a file's own order may differ: `history` prints the canonical one)."""
    if isinstance(loc.label, str):
        return f'"{loc.label}"'
    if not isinstance(stmt, dict):
        return f"#{loc.position}"
    who = stmt.get("Principal")
    who_text = "*" if who == "*" else ", ".join(v for _, vs in _values(who) for v in vs if isinstance(v, str))[:60]
    actions = stmt.get("Action", stmt.get("NotAction", ""))
    actions_text = ", ".join(actions) if isinstance(actions, list) else str(actions)
    return f"#{loc.position} ({stmt.get('Effect')} {who_text or '-'}: {actions_text[:60]})"


def _all_values(stmt: Any) -> list[str]:
    principal = stmt.get("Principal") if isinstance(stmt, dict) else None
    if principal == "*":
        return ["*"]
    return [v for _, values in _values(principal) for v in values if isinstance(v, str)]


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
        self.admins = administrators(canonical, key, scope)

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
        labels_at = {loc.position: _label(loc, stmts[loc.position]) for loc in granting}

        def labels(edits: dict[int, Any]) -> str:
            return ", ".join(labels_at[i] for i in sorted(edits))

        candidates: list[tuple[dict[int, Any], str, int]] = []  # edits, summary, principals cut beside
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
                candidates.append((edits, what, 0))
        wild = [loc for loc in granting if isinstance(stmts[loc.position], dict) and _is_any(stmts[loc.position])]
        edits, whats = {}, set()
        for loc in wild:
            confined = _confined(stmts[loc.position], self.key, self.scope)
            if confined is not None:
                edits[loc.position], what = confined
                whats.add(what)
        if edits:
            what = f'confine the "*" statement {labels(edits)} to {" and ".join(sorted(whats))}'
            candidates.append((edits, what, 0))
        removal = {loc.position: None for loc in granting}
        if removal:
            # What else the statements name goes too, and no finding shows what the key's own
            # account or a service loses: said in the summary, and ranked after smaller changes.
            mine = {v for ways in _naming(target) for i in removal for v in _named_values(stmts[i], ways)}
            others = sorted({v for i in removal for v in _all_values(stmts[i])} - mine - {"*"})
            what = f"remove statement {labels(removal)}"
            if others:
                what += f" (it also names {', '.join(others[:4])}{', …' if len(others) > 4 else ''})"
            candidates.append((removal, what, len(others)))
        ranked: list[tuple[int, Remediation]] = []
        seen: set[str] = set()
        for edits, summary, cut in candidates:
            text = self._revised(edits)
            if text in seen or not self.admins <= administrators(text, self.key, self.scope):
                continue
            seen.add(text)
            checked = self._check(target, dataclasses.replace(self.key, policy=text))
            if checked is None:
                continue
            ranked.append(
                (
                    checked[0] + cut,
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
        """Deny the finding's actions on this key to this principal alone, in a new inline policy
        of its own (a policy that grants them may be AWS-managed, or shared with others)."""
        cp = self.scope.principal(target.principal)
        if cp is None or not ({"iam-policy", "grant"} & set(target.via)):
            return []
        granting = next((e for e in elements if e["source"] == "iam-policy" and e["effect"] == "Allow"), None)
        name = "KmsAuditDeny-" + "".join(ch for ch in self.key.key_id if ch.isalnum())[:12]
        deny = {"Effect": "Deny", "Action": list(target.actions), "Resource": self.key.arn}
        revised = json.dumps({"Version": "2012-10-17", "Statement": [deny]}, indent=2, ensure_ascii=False)
        docs = (
            *(d for d in cp.source.policies if d.name != "inline:" + name),
            PolicyDocument("inline:" + name, revised),
        )
        checked = self._check(target, self.key, self._scope_with(dataclasses.replace(cp.source, policies=docs)))
        kind = "role" if cp.source.kind == "role" else "user"
        granted = f" ({granting['name']} grants them)" if granting else ""
        return [
            {
                "kind": "iam-policy",
                "summary": f"deny {', '.join(target.actions)} on this key to {target.principal} "
                f"in a new inline policy {name}{granted}",
                "principal": target.principal,
                "policy": name,
                "statement": granting["statement"] if granting else None,
                "iam_policy": revised,
                "command": f"aws iam put-{kind}-policy --{kind}-name {cp.source.name} --policy-name {name} "
                "--policy-document file://iam-policy.json",
                "verified": checked is not None,
                "also_changes": checked[1] if checked else [],
            }
        ]

    def _scope_with(self, changed: IamPrincipal) -> AuditScope:
        """The scope with one principal's policies changed."""
        principals = [
            changed if cp.source.arn == changed.arn else cp.source
            for iam in self.scope.iam.values()
            for cp in iam.principals
        ]
        return AuditScope(
            principals,
            audited_accounts=self.scope.audited,
            trusted_accounts=self.scope.trusted,
            organization=self.scope.organization,
        )

    def remediate(self, target: Finding, elements: list[Element]) -> list[Remediation]:
        """The verified changes only: one that does not remove the finding is not offered."""
        if target.kind != "access":
            return []
        offered = self.key_policy(target, elements) + self.grants(target, elements) + self.iam(target, elements)
        return [r for r in offered if r["verified"]]


def explain_and_remedy(
    key: KeyRecord, scope: AuditScope, only: Collection[str] | None = None
) -> list[tuple[Finding, list[Element], list[Remediation]]]:
    """Every finding of the key (or those whose ids are in `only`: remediation is the costly
    part) with its explanation and its verified remediations (SPEC §4)."""
    findings, explained, canonical = explain_key(key, scope)
    remedies = Remedies(key, scope, canonical, findings)
    wanted = [f for f in findings if only is None or f.id in only]
    return [(f, public(explained[f.id]), remedies.remediate(f, explained[f.id])) for f in wanted]
