"""A key policy's statements indexed by the accounts they can apply to.

Most statements of a real key policy name the key's own administrators; an account that no
statement mentions (and no `"*"` statement covers) is decided without evaluating anything, and
principals of an account that no statement singles out share one verdict.
"""

from __future__ import annotations

from kmsaudit.evaluator.condkeys import TABLE, key_info
from kmsaudit.evaluator.statements import ConditionClause, Statement

# Principal-side keys every principal of one account shares (condkeys.py decides the rest).
_ACCOUNT_WIDE = frozenset(
    {
        "aws:principalaccount",
        "kms:calleraccount",
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:principalisawsservice",
    }
)
# Condition keys whose value or presence differs between principals of one account: who it is,
# its tags, and what depends on whether it is a user or a role (SPEC §2.7).
PRINCIPAL_VARYING = frozenset(
    k
    for k, info in TABLE.items()
    if (info.decided == "principal" and k not in _ACCOUNT_WIDE) or info.presence in ("user", "temporary", "signed")
)


def _varies(clause: ConditionClause) -> bool:
    info = key_info(clause.key_lc)
    return (
        clause.key_lc in PRINCIPAL_VARYING
        or (info is not None and info.presence == "tagged")
        or any("${" in v for v in clause.values)
    )


def _unique(statements: list[Statement]) -> tuple[Statement, ...]:
    return tuple({id(s): s for s in statements}.values())


class KeyPolicyIndex:
    def __init__(self, statements: tuple[Statement, ...]) -> None:
        # A key policy statement without Principal applies to nobody (it is linted).
        usable = [s for s in statements if s.principals is not None]
        # Every statement decides by the principal alone (no condition on the key itself).
        self.subject_only = all(s.subject_only for s in usable)
        self.wild = tuple(s for s in usable if s.principals and (s.principals.any or s.not_principal))
        by_account: dict[str, list[Statement]] = {}
        others: list[Statement] = []
        for stmt in usable:
            pset = stmt.principals
            assert pset is not None
            for account in pset.mentioned:
                by_account.setdefault(account, []).append(stmt)
            if pset.others:
                others.append(stmt)
        self.by_account = {a: _unique([*self.wild, *s]) for a, s in by_account.items()}
        self.others = _unique([*self.wild, *others])
        self._generic: dict[str, tuple[bool, frozenset[str], frozenset[str]]] = {}

    def statements_for(self, kind: str, account: str) -> tuple[Statement, ...]:
        if kind in ("service", "federated", "canonical"):
            return self.others
        if account:
            return self.by_account.get(account, self.wild)
        return self.wild

    def generic(self, account: str) -> tuple[bool, frozenset[str], frozenset[str]]:
        """Can the account's principals share one key-policy verdict? Less the ARNs and role
        names (for sessions) that statements single out, which are decided on their own."""
        if account not in self._generic:
            stmts = self.statements_for("concrete", account)
            varying = any(_varies(c) for s in stmts for c in s.conditions)
            arns = frozenset(a for s in stmts if s.principals for a in s.principals.arns)
            roles = frozenset(
                r.role_name for s in stmts if s.principals for r in s.principals.sessions if r.account == account
            )
            self._generic[account] = (not varying, arns, roles)
        return self._generic[account]
