import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kmsaudit.demo.emulator import start_emulator

# No timing in tests: hypothesis's per-example deadline (200 ms) fails on a busy machine, not on
# a wrong answer (a canonical-text property failed so with the suite on 4 workers beside a soak).
settings.register_profile("kmsaudit", deadline=None)
settings.load_profile("kmsaudit")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto in server mode on loopback, one for the whole run (tests/estate.py wipes it per test)."""
    server, url = start_emulator()
    yield url
    server.stop()
