"""A value that several IAM patterns accept at once: the witnesses of SPEC §3's outsider.

`Allow "*" if ArnLike aws:PrincipalArn "arn:aws:iam::*:role/backup-*"` is public because somebody
outside the estate can be `arn:aws:iam::<their account>:role/backup-x`. To decide such
statements on concrete values, `intersect` finds the shortest string that matches every given
pattern and a shape (an account is twelve digits; a principal ARN has fixed fields), or None
when none exists. Patterns are IAM globs (`*` any run, `?` one character) or literals.

It walks the product of the patterns' automata breadth-first, trying only the characters the
patterns name plus one filler, so it is small: states are bounded by the product of the
patterns' lengths, and a policy's patterns are short (cached per tuple of patterns).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

DIGITS = "0123456789"
ALL = ""  # a Star that excludes no character


class Lit(NamedTuple):
    char: str


class One(NamedTuple):
    """Exactly one character from `chars` ("" for any character)."""

    chars: str


class Star(NamedTuple):
    """Any run of characters, none of them in `excluded`."""

    excluded: str


Token = Lit | One | Star
Shape = tuple[Token, ...]


def glob(pattern: str, wildcards: bool = True) -> Shape:
    """An IAM pattern as tokens (a literal, such as a `StringEquals` value, when not `wildcards`)."""
    if not wildcards:
        return tuple(Lit(c) for c in pattern)
    return tuple(Star(ALL) if c == "*" else One("") if c == "?" else Lit(c) for c in pattern)


def shape(*parts: str | Token | Shape) -> Shape:
    """Literal text and tokens, in order: `shape("arn:aws:iam::", digits(12), ":role/", Star(ALL))`."""
    out: list[Token] = []
    for part in parts:
        if isinstance(part, str):
            out.extend(Lit(c) for c in part)
        elif isinstance(part, Lit | One | Star):
            out.append(part)
        else:
            out.extend(part)
    return tuple(out)


def digits(n: int) -> Shape:
    return tuple(One(DIGITS) for _ in range(n))


def _accepts(token: Token, char: str) -> bool:
    if isinstance(token, Lit):
        return token.char == char
    if isinstance(token, One):
        return not token.chars or char in token.chars
    return char not in token.excluded


def _close(tokens: Shape, positions: frozenset[int]) -> frozenset[int]:
    """Positions reachable without consuming a character (a Star may match nothing)."""
    out = set(positions)
    todo = list(positions)
    while todo:
        i = todo.pop()
        if i < len(tokens) and isinstance(tokens[i], Star) and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    return frozenset(out)


def _step(tokens: Shape, positions: frozenset[int], char: str) -> frozenset[int]:
    nxt: set[int] = set()
    for i in positions:
        if i < len(tokens) and _accepts(tokens[i], char):
            nxt.add(i if isinstance(tokens[i], Star) else i + 1)
    return _close(tokens, frozenset(nxt))


def intersect(shapes: Sequence[Shape], filler: str = "z", max_states: int = 20_000) -> str | None:
    """The shortest string every shape accepts (preferring `filler` where any character does),
    or None. `filler` steers the choice: a different filler gives a different witness."""
    return _intersect(tuple(shapes), filler, max_states)


@lru_cache(maxsize=4096)
def _intersect(shapes: tuple[Shape, ...], filler: str, max_states: int) -> str | None:
    if not shapes:
        return ""
    start = tuple(_close(s, frozenset({0})) for s in shapes)
    ends = tuple(len(s) for s in shapes)
    # The filler where any character does, a digit (or a letter) for the other kind of
    # position; the characters the patterns name are added state by state, below.
    base = [filler, "z" if filler in DIGITS else "0"]
    seen = {start: ""}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        text = seen[state]
        if all(end in positions for end, positions in zip(ends, state, strict=True)):
            return text
        if len(seen) > max_states:
            return None
        wanted = list(base)
        for s, positions in zip(shapes, state, strict=True):
            for i in positions:
                token = s[i] if i < len(s) else None
                if isinstance(token, Lit) and token.char not in wanted:
                    wanted.append(token.char)
        for char in wanted:
            nxt = tuple(_step(s, p, char) for s, p in zip(shapes, state, strict=True))
            if all(nxt) and nxt not in seen:
                seen[nxt] = text + char
                queue.append(nxt)
    return None
