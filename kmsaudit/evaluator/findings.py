"""A key's findings, merged per principal and access level, with what SPEC §4 says of each:
zone, severity, actions, conditions (shared between keys: verdicts are cached, and so is what a
finding says of one)."""

from __future__ import annotations

from typing import Any

from kmsaudit.evaluator.access import Access, Conditions
from kmsaudit.evaluator.actions import CROSS_ACCOUNT_MASK, names
from kmsaudit.evaluator.scope import AuditScope
from kmsaudit.model import Finding, KeyRecord

# principal_account … conditional_actions: the fields of a Finding after key and principal
Tail = tuple[
    str, str, str, tuple[str, ...], tuple[str, ...], bool, tuple[dict[str, Any], ...], str, str, tuple[str, ...]
]


# (principal, access, account) -> how each finding was decided: ("key", subject),
# ("iam", subject, compiled principal, SCP levels, RCP levels) or ("grant", subject, grant,
# the grantee's compiled principal or None). Filled only when explaining (evaluator/explain.py).
Trace = dict[tuple[str, str, str], list[tuple[Any, ...]]]


class KeyFindings:
    """Findings of one key, merged per (principal, access level)."""

    def __init__(self, key: KeyRecord, scope: AuditScope, trace: Trace | None = None) -> None:
        self.key, self.scope, self.trace = key, scope, trace
        # (principal, access, account): a service principal is reported once per account it acts for
        self.items: dict[tuple[str, str, str], tuple[str, Access, tuple[str, ...]]] = {}

    def add(self, principal: str, account: str, access: str, acc: Access, via: tuple[str, ...]) -> None:
        """`via`: sorted, as findings show it (VIA_KEY_POLICY, VIA_IAM, VIA_GRANT)."""
        acc = acc.restrict(CROSS_ACCOUNT_MASK)  # SPEC §2.3
        if not (acc.sure or acc.maybe):
            return
        slot = (principal, access, account)
        before = self.items.get(slot)
        if before is not None:
            _, merged, vias = before
            self.items[slot] = (account, merged.either(acc), tuple(sorted({*vias, *via})))
        else:
            self.items[slot] = (account, acc, via)

    def note(self, principal: str, access: str, account: str, path: tuple[Any, ...]) -> None:
        """Whom a finding was decided for, and through what (only when `trace` is kept)."""
        if self.trace is not None:
            self.trace.setdefault((principal, access, account), []).append(path)

    def findings(self) -> list[Finding]:
        out = []
        key = self.key
        tails = self.scope.finding_tails
        for (principal, access, _), (account, acc, via) in self.items.items():
            # Verdicts are shared between keys (cached), and so is what a finding says of one.
            marker = (id(acc), account, access, via)
            entry = tails.get(marker)
            if entry is None or entry[0] is not acc:
                entry = tails[marker] = (acc, self._tail(account, access, acc, via))
            out.append(Finding(key.arn, key.account, key.region, principal, *entry[1]))
        return out

    def _tail(self, account: str, access: str, acc: Access, via: tuple[str, ...]) -> Tail:
        """A finding's fields after `principal`, as SPEC §4 orders them."""
        trusted = account in self.scope.trusted and access != "public" and account != "*"
        zone = "trusted" if trusted else "external"
        conditional = acc.sure == 0
        if zone == "trusted":
            severity = "low"
        elif access == "public":
            severity = "high" if conditional else "critical"
        else:
            severity = "medium" if conditional else "high"
        conditions = self._conditions(acc.conditions) if acc.conditions else ()
        actions = names(acc.sure | acc.maybe)
        return (account, access, zone, via, actions, conditional, conditions, severity, "access", names(acc.maybe))

    def _conditions(self, conds: Conditions) -> tuple[dict[str, Any], ...]:
        cache = self.scope.condition_dicts
        found = cache.get(conds)
        if found is None:
            dicts: list[dict[str, Any]] = []
            for _, desc in conds:
                as_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in desc}
                if as_dict not in dicts:
                    dicts.append(as_dict)
            found = cache[conds] = tuple(dicts)
        return found
