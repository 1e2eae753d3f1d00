"""Wildcards, ARNs and principals: the matching every rule of SPEC §2 builds on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

ACCOUNT_RE = re.compile(r"^\d{12}$")
UNIQUE_ID_RE = re.compile(r"^A(RO|ID|IP|NP|NV|SC|KI|GP|PA)A[A-Z0-9]{8,}$")


class Wildcard:
    """An IAM pattern (`*` any run, `?` one character, the rest literal), matched in linear time.

    A regex such as `.*a.*a.*a.*b` backtracks exponentially on a value that almost matches, so
    one hostile policy (`"Resource": "*a*a*a*a*a*a*a*a*b"`) could hang a scan (issue #7). The
    pattern is split at `*` into fixed-length segments instead: the first must match at the
    start, the last at the end, and each middle one at its leftmost place after the previous
    one, which is correct for globs and costs O(len(pattern) × len(value)) at worst.
    """

    __slots__ = ("head", "middle", "min_length", "starred", "tail")

    def __init__(self, pattern: str, ignore_case: bool = False) -> None:
        flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        segments = pattern.split("*")
        self.starred = len(segments) > 1
        compiled = [
            (len(seg), re.compile("".join("." if ch == "?" else re.escape(ch) for ch in seg), flags))
            for seg in segments
        ]
        self.head = compiled[0]
        self.tail = compiled[-1]  # the head itself when there is no `*` (fullmatch then uses the head only)
        self.middle = tuple(c for c in compiled[1:-1] if c[0])
        self.min_length = sum(n for n, _ in compiled)

    def fullmatch(self, value: str) -> bool:
        if not self.starred:
            return self.head[1].fullmatch(value) is not None
        if len(value) < self.min_length:
            return False
        head_len, head = self.head
        tail_len, tail = self.tail
        end = len(value) - tail_len
        if head.match(value, 0, head_len) is None or tail.match(value, end) is None:
            return False
        position = head_len
        for _, segment in self.middle:
            found = segment.search(value, position, end)
            if found is None:
                return False
            position = found.end()
        return True


@lru_cache(maxsize=16384)
def wildcard(pattern: str, ignore_case: bool = False) -> Wildcard:
    return Wildcard(pattern, ignore_case)


def wildcard_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    if pattern == "*":
        return True
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == value.lower() if ignore_case else pattern == value
    return wildcard(pattern, ignore_case).fullmatch(value)


def match_once(seen: dict[str, bool], pattern: str, value: str) -> bool:
    """`wildcard_match`, remembered in `seen` (the results for one value, such as a key ARN)."""
    hit = seen.get(pattern)
    if hit is None:
        hit = seen[pattern] = wildcard_match(pattern, value)
    return hit


def arn_account(arn: str) -> str:
    """The account field of an ARN (`arn:partition:service:region:account:resource`)."""
    parts = arn.split(":", 5)
    return parts[4] if len(parts) == 6 and parts[0] == "arn" else ""


def arn_match(pattern: str, value: str) -> bool:
    """`ArnLike` semantics: field by field, wildcards within a field, case-sensitive."""
    p = pattern.split(":", 5)
    v = value.split(":", 5)
    if len(p) != 6 or len(v) != 6:
        return wildcard_match(pattern, value)
    return all(wildcard_match(a, b) for a, b in zip(p, v, strict=True))


def root_arn(account: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:root"


@dataclass(frozen=True, slots=True)
class PrincipalRef:
    """One entry of a `Principal`/`NotPrincipal` element, classified (SPEC §2.5)."""

    kind: str  # any | account | iam | session | service | federated | canonical | unique-id | invalid
    value: str  # canonical text: the ARN (account as its root ARN), the service name…
    account: str = ""
    role_name: str = ""  # for a session: the role it belongs to
    session: str = ""


def _classify_aws(text: str) -> PrincipalRef:
    text = text.strip()
    if text == "*":
        return PrincipalRef("any", "*")
    if ACCOUNT_RE.match(text):
        return PrincipalRef("account", root_arn(text), text)
    if UNIQUE_ID_RE.match(text):
        return PrincipalRef("unique-id", text)
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not ACCOUNT_RE.match(parts[4]):
        return PrincipalRef("invalid", text)
    partition, service, account, resource = parts[1], parts[2], parts[4], parts[5]
    if "*" in resource or "?" in resource:
        return PrincipalRef("invalid", text, account)
    if service == "iam" and resource == "root":
        return PrincipalRef("account", root_arn(account, partition), account)
    if service == "iam" and resource.split("/", 1)[0] in ("user", "role"):
        return PrincipalRef("iam", text, account)
    if service == "sts" and resource.startswith("assumed-role/"):
        bits = resource.split("/")
        if len(bits) >= 3:
            return PrincipalRef("session", text, account, role_name=bits[1], session=bits[2])
        return PrincipalRef("invalid", text, account)
    if service == "sts" and resource.startswith("federated-user/"):
        return PrincipalRef("iam", text, account)
    if service == "iam" and resource.startswith("group/"):
        return PrincipalRef("invalid", text, account)  # SPEC §2.5: groups are never principals
    return PrincipalRef("invalid", text, account)


def _values(raw: Any) -> list[Any]:
    if isinstance(raw, list):
        return raw
    return [raw]


def parse_principal(raw: Any) -> tuple[PrincipalRef, ...]:
    """Every form of SPEC §2.5; anything else becomes an `invalid` reference, never an error."""
    if raw == "*":
        return (PrincipalRef("any", "*"),)
    if not isinstance(raw, dict):
        return (PrincipalRef("invalid", str(raw)[:200]),)
    refs: list[PrincipalRef] = []
    for ptype, value in raw.items():
        kind = str(ptype).lower()
        for item in _values(value):
            if not isinstance(item, str):
                refs.append(PrincipalRef("invalid", str(item)[:200]))
            elif kind == "aws":
                refs.append(_classify_aws(item))
            elif kind == "service":
                refs.append(PrincipalRef("any" if item == "*" else "service", item))
            elif kind == "federated":
                refs.append(PrincipalRef("federated", item, arn_account(item)))
            elif kind == "canonicaluser":
                refs.append(PrincipalRef("canonical", item))
            else:
                refs.append(PrincipalRef("invalid", item))
    return tuple(refs)


def iam_principal_name(arn: str) -> tuple[str, str]:
    """(`user`|`role`, name) of an IAM user or role ARN, path removed."""
    resource = arn.split(":", 5)[-1]
    kind, _, rest = resource.partition("/")
    return kind, rest.rsplit("/", 1)[-1]
