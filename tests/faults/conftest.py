"""The fault suite (issue #7): a wiped moto per test, and a report of what was tried.

With KMSAUDIT_FAULT_REPORT=FILE the counts each test adds (`report.add(...)`) are written to
FILE as JSON at the end of the run; bench/faults.py prints them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator

import pytest
from estate import aws, estate  # noqa: F401  (fixtures)


class Report:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, **counts: int) -> None:
        self.counts.update(counts)


@pytest.fixture(scope="session")
def report() -> Iterator[Report]:
    collected = Report()
    yield collected
    target = os.environ.get("KMSAUDIT_FAULT_REPORT")
    if target:
        with open(target, "w") as out:
            json.dump(dict(sorted(collected.counts.items())), out, indent=1)
