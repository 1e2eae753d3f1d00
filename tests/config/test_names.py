"""Issue #27: `[names]`, account id -> display name, shown beside the id in the report; a key that
is not 12 digits or an empty name is a config error (exit 2, one line, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kmsaudit.config.settings import load_config
from kmsaudit.errors import ConfigError

GOOD = """
[[accounts]]
id = "111122223333"
"""


def test_names_are_read(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text(GOOD + '[names]\n"111122223333" = "payments-prod"\n"444455556666" = "partner"\n')
    assert load_config(path).names == {"111122223333": "payments-prod", "444455556666": "partner"}
    path.write_text(GOOD)
    assert load_config(path).names == {}


@pytest.mark.parametrize(
    ("table", "what"),
    [
        ('"1111" = "short"', "names: '1111' is not a 12-digit account id"),
        ('"payments" = "prod"', "names: 'payments' is not a 12-digit account id"),
        ('"111122223333" = ""', "names: the name of 111122223333 is empty"),
        ('"111122223333" = "   "', "names: the name of 111122223333 is empty"),
        ('"111122223333" = 7', "names.111122223333: Input should be a valid string"),
    ],
)
def test_a_bad_name_is_a_config_error(tmp_path: Path, table: str, what: str) -> None:
    path = tmp_path / "k.toml"
    path.write_text(GOOD + "[names]\n" + table + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {what}"


def test_the_cli_says_it_in_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text(GOOD + '[names]\n"11112222333" = "eleven digits"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "report", "--config", str(path), "--html", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"kmsaudit: error: {path}: names: '11112222333' is not a 12-digit account id"
    ]
    assert not (tmp_path / "r.html").exists()
