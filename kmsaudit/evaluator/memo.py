"""The evaluator's caches: dicts that forget everything when full.

A scan's caches (parsed statements, verdicts, finding fields) hold what repeats across keys; an
estate of unique statements must not grow them without bound. Forgetting costs only the work
of computing an entry again, never a different answer.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = object()  # `memo.get(key, MISSING)`, where None is a value worth remembering


class Memo(dict[Any, Any]):
    """A dict of at most `limit` entries: adding one to a full dict empties it first."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        if len(self) >= self.limit:
            self.clear()
        super().__setitem__(key, value)
