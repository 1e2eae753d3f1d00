import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kmsaudit.demo.emulator import start_emulator


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto in server mode on loopback, one for the whole run (tests/estate.py wipes it per test)."""
    server, url = start_emulator()
    yield url
    server.stop()
