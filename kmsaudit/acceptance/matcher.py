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

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from kmsaudit.evaluator.actions import pattern_mask
from kmsaudit.evaluator.match import ACCOUNT_RE, arn_account, wildcard
from kmsaudit.evaluator.outsider import is_service_principal
from kmsaudit.gcpause import gc_paused
from kmsaudit.model import Finding

if TYPE_CHECKING:
    from kmsaudit.config.accept import AcceptSettings as EntrySettings


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


_WILD = re.compile(r"[*?]")


def _field_test(pattern: str) -> Callable[[str], bool] | None:
    """One field's test; None when the field is `*` (anything)."""
    if pattern == "*":
        return None
    if not _WILD.search(pattern):
        return pattern.__eq__
    head = pattern[:-1]
    if pattern.endswith("*") and not _WILD.search(head):
        return lambda value: value.startswith(head)
    return wildcard(pattern).fullmatch


def _matcher(glob: str) -> Callable[[str], bool]:
    """A glob's test, in linear time. An ARN glob of six fields tests a six-field ARN field by
    field (each colon of one is then a colon of the other, so this is the same test, and most
    fields are `*`, a literal or `prefix*`); anything else is matched whole."""
    fields = glob.split(":")

    def whole(value: str) -> bool:
        return wildcard(glob).fullmatch(value)

    if len(fields) != 6:
        return whole
    tests = [(i, test) for i, test in enumerate(map(_field_test, fields)) if test is not None]

    def match(value: str) -> bool:
        parts = value.split(":")
        if len(parts) != 6:
            return whole(value)
        for i, test in tests:  # noqa: SIM110 - a loop, not a generator per call: the hot path
            if not test(parts[i]):
                return False
        return True

    return match


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
    key_matchers: tuple[Callable[[str], bool], ...] = ()
    principal_matchers: tuple[Callable[[str], bool], ...] = ()

    def __post_init__(self) -> None:
        self.key_matchers = tuple(map(_matcher, self.key_globs))
        self.principal_matchers = tuple(map(_matcher, self.principal_globs))

    @classmethod
    def of(cls, entry: EntrySettings) -> _Entry:
        def wild(text: str) -> bool:
            return "*" in text or "?" in text

        keys = [k for k in entry.keys if k.startswith("arn:")]
        principals = [p for p in entry.principals if p.startswith("arn:")]
        # `"*"` (the principal of a `"*"` statement's finding) and a service principal are matched
        # literally: `principals = ["*"]` accepts that finding, never every outsider (issue #25).
        literal = [p for p in entry.principals if p == "*" or is_service_principal(p)]
        return cls(
            id=entry.id,
            key_arns=frozenset(k for k in keys if not wild(k)),
            key_globs=tuple(k for k in keys if wild(k)),
            aliases=frozenset(k for k in entry.keys if k.startswith("alias/")),
            tags=frozenset(tuple(k[4:].split("=", 1)) for k in entry.keys if k.startswith("tag:")),  # type: ignore[misc]
            accounts=frozenset(p for p in entry.principals if ACCOUNT_RE.match(p)),
            principal_arns=frozenset([*(p for p in principals if not wild(p)), *literal]),
            principal_globs=tuple(p for p in principals if wild(p)),
            orgs=tuple(p[4:] for p in entry.principals if p.startswith("org:")),
            actions=_mask(entry.actions),
            access=frozenset(entry.access),
            conditional=entry.conditional,
        )

    def covers(self, finding: Finding, facts: KeyFacts, org_accounts: Mapping[str, frozenset[str]]) -> bool:
        """The finding's key and principal are this entry's (whatever the access)."""
        return self._covers_key(finding.key_arn, facts) and self._covers_principal(finding, org_accounts)

    def _covers_key(self, key_arn: str, facts: KeyFacts) -> bool:
        if key_arn in self.key_arns:
            return True
        for match in self.key_matchers:
            if match(key_arn):
                return True
        if self.aliases and not self.aliases.isdisjoint(facts.aliases):
            return True
        return any(facts.tags.get(k) == v for k, v in self.tags)

    def _covers_principal(self, finding: Finding, org_accounts: Mapping[str, frozenset[str]]) -> bool:
        account = finding.principal_account
        if account in self.accounts or finding.principal in self.principal_arns:
            return True
        for match in self.principal_matchers:
            if match(finding.principal):
                return True
        return any(account in org_accounts.get(org, ()) for org in self.orgs)

    def within(self, finding: Finding, actions: int | None = None) -> bool:
        """No more than this entry accepts: its access levels, its actions (`actions`: the
        finding's, as a mask, when known), its conditionality."""
        return (
            finding.access in self.access
            and not (_mask(finding.actions) if actions is None else actions) & ~self.actions
            and (self.conditional is not True or finding.conditional)
        )


def _principal_buckets(entry: _Entry, accounts: set[str]) -> set[tuple[str, ...]]:
    """Where the entry's principals can match: their ARNs when it names only ARNs, else their
    accounts when those are known, else anywhere."""
    if entry.principal_arns and not (entry.accounts or entry.principal_globs or entry.orgs):
        return {("arn", arn) for arn in entry.principal_arns}
    return {("account", account) for account in accounts} or {("any",)}


def _key_buckets(entry: _Entry) -> set[tuple[tuple[str, ...], str]]:
    """Where the entry's key patterns can match, as (bucket, prefix of the key's resource field).
    A key ARN has exactly five colons (`arn:aws:kms:REGION:ACCOUNT:key/ID`); so has a glob written
    field by field, and then each of its colons is one of the ARN's, whatever its wildcards: its
    literal account (or region) only matches keys of that account (or region), and the literal
    start of its last field only keys whose id starts so."""
    buckets: set[tuple[tuple[str, ...], str]] = {(("arn", arn), "") for arn in entry.key_arns}
    buckets |= {(("alias", alias), "") for alias in entry.aliases}
    buckets |= {(("tag", k, v), "") for k, v in entry.tags}
    for glob in entry.key_globs:
        fields = glob.split(":")
        if len(fields) != 6:
            buckets.add((("any",), ""))  # no five-colon key ARN matches more colons; fewer: anything
            continue
        resource = _WILD.split(fields[5], maxsplit=1)[0]
        if not _WILD.search(fields[4]):
            buckets.add((("account", fields[4]), resource))
        elif not _WILD.search(fields[3]):
            buckets.add((("region", fields[3]), resource))
        else:
            buckets.add((("any",), resource))
    return buckets


@dataclass(slots=True)
class _Slot:
    """The entries of one (principal, key) bucket, by the literal start of their key id."""

    lengths: list[int] = field(default_factory=list)
    by_prefix: dict[str, list[_Entry]] = field(default_factory=dict)

    def add(self, prefix: str, entry: _Entry) -> None:
        if len(prefix) not in self.lengths:
            self.lengths.append(len(prefix))
            self.lengths.sort()
        self.by_prefix.setdefault(prefix, []).append(entry)


# The last index built (Acceptance.for_scan): the entries it was built from, its date and organization.
_LAST: dict[str, tuple[Sequence[EntrySettings], object, Acceptance]] = {}


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
        # Entries by where they can apply: (principal bucket — a principal ARN, an account, or any —,
        # key bucket — a key ARN, the account or region a key glob names, an alias, a tag, or any
        # key — and the start of the key id a glob names), so a finding is compared with the few
        # entries that can concern it, however many there are.
        self._index: dict[tuple[str, ...], dict[tuple[str, ...], _Slot]] = {}
        self._all: list[_Entry] = []
        with gc_paused():
            self._build(entries, today)

    def _build(self, entries: Sequence[EntrySettings], today: date) -> None:
        for settings in entries:
            if settings.expires < today:
                continue  # an expired entry stays valid configuration: it accepts nothing
            entry = _Entry.of(settings)
            for who in _principal_buckets(entry, self._accounts(entry)):
                for bucket, prefix in _key_buckets(entry):
                    self._index.setdefault(who, {}).setdefault(bucket, _Slot()).add(prefix, entry)
            self._all.append(entry)

    @classmethod
    def for_scan(
        cls,
        entries: Sequence[EntrySettings],
        today: date,
        org_accounts: Mapping[str, frozenset[str]] | None = None,
    ) -> Acceptance:
        """An Acceptance for one scan, its index built once for as long as the entries, the date
        and the organization stay the same (a daemon's scans), its `matched` its own."""
        key = (today, tuple(sorted((org, tuple(sorted(a))) for org, a in (org_accounts or {}).items())))
        cached = _LAST.get("acceptance")
        if cached is not None and cached[0] is entries and cached[1] == key:
            shared = cached[2]
        else:
            shared = cls(entries, today, org_accounts)
            _LAST["acceptance"] = (entries, key, shared)
        fresh = object.__new__(cls)
        fresh.org_accounts, fresh._index, fresh._all = shared.org_accounts, shared._index, shared._all
        fresh.matched = set()
        return fresh

    def _accounts(self, entry: _Entry) -> set[str]:
        """The principal accounts the entry can concern, or none when that is not known."""
        accounts = set(entry.accounts)
        for arn in (*entry.principal_arns, *entry.principal_globs):
            account = arn_account(arn)
            if not ACCOUNT_RE.match(account):
                return set()
            accounts.add(account)
        for org in entry.orgs:
            if org not in self.org_accounts:
                return set()
            accounts |= self.org_accounts[org]
        return accounts

    def judge(self, finding: Finding, facts: KeyFacts = NO_FACTS) -> Finding:
        """The finding with `accepted`, `accepted_by` and, if it went beyond an entry, `outgrew`."""
        if finding.kind != "access":
            return finding
        outgrew = None
        fields = finding.key_arn.split(":")
        if len(fields) == 6:
            candidates: list[_Entry] = []
            resource = fields[5]
            buckets = [("arn", finding.key_arn), ("account", fields[4]), ("region", fields[3]), ("any",)]
            buckets += [("alias", alias) for alias in facts.aliases]
            buckets += [("tag", k, v) for k, v in facts.tags.items()]
            index = self._index
            for who in (("arn", finding.principal), ("account", finding.principal_account), ("any",)):
                slots = index.get(who)
                if slots is None:
                    continue
                for bucket in buckets:
                    slot = slots.get(bucket)
                    if slot is not None:
                        for n in slot.lengths:
                            candidates.extend(slot.by_prefix.get(resource[:n], ()))
        else:  # not a KMS key ARN: compare with every entry
            candidates = self._all
        seen: set[str] = set()
        actions = _mask(finding.actions)
        for entry in candidates:
            if entry.id in seen:
                continue
            seen.add(entry.id)
            if not entry.covers(finding, facts, self.org_accounts):
                continue
            if entry.within(finding, actions):
                self.matched.add(entry.id)
                return finding._replace(accepted=True, accepted_by=entry.id, outgrew=None)
            outgrew = outgrew or entry.id
        if not finding.accepted and finding.accepted_by is None and finding.outgrew == outgrew:
            return finding  # as the evaluator made it: no copy
        return finding._replace(accepted=False, accepted_by=None, outgrew=outgrew)
