"""SPEC §7: the config is validated; each mistake is exit 2 and one line naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kmsaudit.config.settings import load_config
from kmsaudit.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GOOD = """
[scan]
regions = ["us-east-1"]
[[accounts]]
id = "111122223333"
role_arn = "arn:aws:iam::111122223333:role/KmsAuditReadOnly"
"""


def test_the_shipped_example_is_valid() -> None:
    config = load_config(REPO / "config" / "example.toml")
    assert [a.id for a in config.accounts] == ["111122223333", "444455556666"]
    assert config.regions_of(config.accounts[0]) == ["us-west-2"]
    assert config.regions_of(config.accounts[1]) == ["us-east-1", "eu-west-1"]
    assert config.interval_seconds == 900
    assert config.scan.rate("ListGrants") == pytest.approx(80)  # SPEC §9 quota × 0.8 margin
    assert config.names == {"111122223333": "payments-prod", "444455556666": "partner-analytics"}


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (GOOD + 'colour = "blue"\n', "accounts[1].colour", "unknown key"),
        (GOOD.replace("[scan]", "[scan]\nfrobnicate = 1"), "scan.frobnicate", "unknown key"),
        (GOOD.replace('id = "111122223333"', 'id = "1111"'), "accounts[1].id", "should match pattern"),
        (GOOD.replace("role/KmsAuditReadOnly", "user/x"), "accounts[1].role_arn", "is not an IAM role ARN"),
        (GOOD.replace(":111122223333:role", ":999999999999:role"), "accounts[1]", "not in 111122223333"),
        (GOOD.replace("us-east-1", "us-moon-1"), "scan.regions", "unknown region 'us-moon-1'"),
        (GOOD + GOOD.split("[scan]")[1].split('regions = ["us-east-1"]')[1], "(top level)", "listed twice"),
        ('[scan]\nregions = ["us-east-1"]\n', "(top level)", "nothing to audit"),
        (GOOD.replace("[scan]", '[scan]\ninterval = "0s"'), "scan.interval", "at least 1s"),
        (GOOD.replace("[scan]", '[scan]\ninterval = "soon"'), "scan.interval", "not a duration"),
        (GOOD.replace("[scan]", "[scan]\nquotas = { Frobnicate = 1 }"), "scan.quotas", "no quota is known"),
        (GOOD + '[trust]\naccounts = ["12"]\n', "trust.accounts[1]", "should match pattern"),
    ],
)
def test_invalid_config_names_file_and_key(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {where}: "), message
    assert what in message and "\n" not in message


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[scan\nregions = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_cli_config_error_is_exit_2_one_line_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("us-east-1", "us-moon-1"))
    proc = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "scan", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"kmsaudit: error: {path}: scan.regions: unknown region 'us-moon-1'"]


def test_interval_may_be_a_cron_expression(tmp_path: Path) -> None:
    path = tmp_path / "cron.toml"
    path.write_text(GOOD.replace("[scan]", '[scan]\ninterval = "*/15 * * * *"'))
    config = load_config(path)
    assert config.interval_seconds == 900
    assert config.seconds_to_next_scan(1_800_000_000.0 + 60) == 840  # next quarter hour, UTC
    path.write_text(GOOD.replace("[scan]", '[scan]\ninterval = "61 * * * *"'))
    with pytest.raises(ConfigError, match=r"scan\.interval"):
        load_config(path)


def test_the_readme_configuration_table_lists_every_key() -> None:
    """Issue #13: the config reference lists every key the config accepts."""
    import re
    from pathlib import Path

    from pydantic import BaseModel

    from kmsaudit.config.settings import Config

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| key | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = set()
    for cell in rows:
        names = re.findall(r"`([\w.\[\]]+)`", cell)
        head = names[0].rsplit(".", 1)[0] if "." in names[0] else ""
        documented.update(n if not n.startswith(".") else head + n for n in names)

    def keys(model: type[BaseModel], prefix: str) -> set[str]:
        found = set()
        for name, field in model.model_fields.items():
            annotation = field.annotation
            args = getattr(annotation, "__args__", ())
            nested = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
            path = f"{prefix}{name}"
            if nested is not None:
                is_list = getattr(annotation, "__origin__", None) is list
                found |= keys(nested, f"{path}[]." if is_list else f"{path}.")
            else:
                found.add(path)
        return found

    missing = keys(Config, "") - documented
    assert not missing, f"keys missing from README's configuration table: {sorted(missing)}"
