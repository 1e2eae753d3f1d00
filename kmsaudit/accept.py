"""Accepted access (README "Accepting known access"), pure: entries × findings → accepted flags.

An entry accepts a finding when it is unexpired and the finding is within every bound of it: one
of its keys, one of its principals, one of its access levels, no action beyond its own, and (if
the entry says so) still conditional. A finding that the entry covers (its key and principal) but
that goes beyond it — more actions, unconditional now, `effective` where `potential` was
accepted — is not accepted: it *outgrew* the entry, and says which. An expired entry accepts
nothing. Public access is accepted only by an entry that allows it (`allow_public`).

Entries are indexed by the account of the principals they name, so a scan's findings are each
compared with the few entries that can concern them; patterns are matched in linear time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from kmsaudit.evaluator.actions import pattern_mask
from kmsaudit.evaluator.match import ACCOUNT_RE, arn_account, wildcard_match
from kmsaudit.model import Finding

if TYPE_CHECKING:
    from kmsaudit.config import AcceptSettings as EntrySettings


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What key patterns other than ARNs look at: the key's aliases and tags."""

    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


NO_FACTS = KeyFacts()


def _mask(actions: Iterable[str]) -> int:
    mask = 0
    for action in actions:
        mask |= pattern_mask(action)
    return mask


@dataclass(slots=True)
class _Entry:
    id: str
    key_arns: frozenset[str]
    key_globs: tuple[str, ...]
    aliases: frozenset[str]
    tags: frozenset[tuple[str, str]]
    accounts: frozenset[str]  # a 12-digit principal: the account and every principal in it
    principal_arns: frozenset[str]
    principal_globs: tuple[str, ...]
    orgs: tuple[str, ...]
    actions: int
    access: frozenset[str]
    conditional: bool | None

    @classmethod
    def of(cls, entry: EntrySettings) -> _Entry:
        def wild(text: str) -> bool:
            return "*" in text or "?" in text

        keys = [k for k in entry.keys if k.startswith("arn:")]
        principals = [p for p in entry.principals if p.startswith("arn:") or p == "*"]
        return cls(
            id=entry.id,
            key_arns=frozenset(k for k in keys if not wild(k)),
            key_globs=tuple(k for k in keys if wild(k)),
            aliases=frozenset(k for k in entry.keys if k.startswith("alias/")),
            tags=frozenset(tuple(k[4:].split("=", 1)) for k in entry.keys if k.startswith("tag:")),  # type: ignore[misc]
            accounts=frozenset(p for p in entry.principals if ACCOUNT_RE.match(p)),
            principal_arns=frozenset(p for p in principals if not wild(p)),
            principal_globs=tuple(p for p in principals if wild(p)),
            orgs=tuple(p[4:] for p in entry.principals if p.startswith("org:")),
            actions=_mask(entry.actions),
            access=frozenset(entry.access),
            conditional=entry.conditional,
        )

    def covers(self, finding: Finding, facts: KeyFacts, org_accounts: Mapping[str, frozenset[str]]) -> bool:
        """The finding's key and principal are this entry's (whatever the access)."""
        key = (
            finding.key_arn in self.key_arns
            or any(wildcard_match(g, finding.key_arn) for g in self.key_globs)
            or any(a in self.aliases for a in facts.aliases)
            or any(facts.tags.get(k) == v for k, v in self.tags)
        )
        if not key:
            return False
        account = finding.principal_account
        return (
            account in self.accounts
            or finding.principal in self.principal_arns
            or any(wildcard_match(g, finding.principal) for g in self.principal_globs)
            or any(account in org_accounts.get(org, ()) for org in self.orgs)
        )

    def within(self, finding: Finding) -> bool:
        """No more than this entry accepts: its access levels, its actions, its conditionality."""
        return (
            finding.access in self.access
            and not _mask(finding.actions) & ~self.actions
            and (self.conditional is not True or finding.conditional)
        )


class Acceptance:
    """The unexpired entries of a scan, ready to judge its findings; remembers which matched."""

    def __init__(
        self,
        entries: Sequence[EntrySettings],
        today: date,
        org_accounts: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.org_accounts = org_accounts or {}
        self.matched: set[str] = set()
        self._by_account: dict[str, list[_Entry]] = {}
        self._anywhere: list[_Entry] = []
        for settings in entries:
            if settings.expires < today:
                continue  # an expired entry stays valid configuration: it accepts nothing
            entry = _Entry.of(settings)
            accounts = set(entry.accounts)
            for arn in (*entry.principal_arns, *entry.principal_globs):
                account = arn_account(arn)
                if ACCOUNT_RE.match(account):
                    accounts.add(account)
                else:
                    accounts = set()
                    break
            else:
                for org in entry.orgs:
                    if org in self.org_accounts:
                        accounts |= self.org_accounts[org]
                if accounts:
                    for account in accounts:
                        self._by_account.setdefault(account, []).append(entry)
                    continue
            self._anywhere.append(entry)

    def judge(self, finding: Finding, facts: KeyFacts = NO_FACTS) -> Finding:
        """The finding with `accepted`, `accepted_by` and, if it went beyond an entry, `outgrew`."""
        if finding.kind != "access":
            return finding
        outgrew = None
        for entry in (*self._by_account.get(finding.principal_account, ()), *self._anywhere):
            if not entry.covers(finding, facts, self.org_accounts):
                continue
            if entry.within(finding):
                self.matched.add(entry.id)
                return finding._replace(accepted=True, accepted_by=entry.id, outgrew=None)
            outgrew = outgrew or entry.id
        return finding._replace(accepted=False, accepted_by=None, outgrew=outgrew)
