"""Issue #25 item 4: `kmsaudit accept` never writes a wildcard it did not mean; service principals
are accepted as such; `--expires` is bounded on the UTC date, as the acceptance files are."""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from synthetic import scan

from kmsaudit.acceptance.entries import entry_for, to_toml
from kmsaudit.acceptance.matcher import Acceptance
from kmsaudit.cli.main import main
from kmsaudit.config.accept import AcceptSettings
from kmsaudit.errors import UsageError
from kmsaudit.model import Finding
from kmsaudit.store.database import Store

A, B, UNKNOWN = "111122223333", "444455556666", "999988887777"
KEY = f"arn:aws:kms:us-east-1:{A}:key/k1"
TODAY = date(2026, 11, 27)


def finding(principal: str, account: str, access: str = "potential", **extra: Any) -> Finding:
    base: dict[str, Any] = dict(
        key_arn=KEY,
        key_account=A,
        region="us-east-1",
        principal=principal,
        principal_account=account,
        access=access,
        zone="external",
        via=("key-policy",),
        actions=("kms:Decrypt",),
        conditional=True,
        conditions=(),
        severity="medium",
    )
    base.update(extra)
    return Finding(**base)


def accepted_entry(f: Finding) -> AcceptSettings:
    """What `kmsaudit accept` writes for `f`, read back as the config reads it."""
    entry = entry_for(f.to_dict(), entry_id="e1", reason="known", owner="sec", expires=date(2027, 1, 1), ticket=None)
    data = tomllib.loads(to_toml(entry))["accept"][0]
    return AcceptSettings.model_validate(data)


def judged(f: Finding, entry: AcceptSettings) -> bool:
    return Acceptance([entry], TODAY).judge(f).accepted


def test_an_entry_for_the_star_principal_accepts_no_outsider() -> None:
    """The organization-confined `"*"` finding, accepted, wrote principals = ["*"], matched as a glob:
    every outsider's new access was then accepted."""
    star = finding("*", "*")
    entry = accepted_entry(star)
    assert entry.principals == ["*"]
    assert judged(star, entry)  # the finding it was written for
    newcomer = finding(f"arn:aws:iam::{UNKNOWN}:root", UNKNOWN)
    assert not judged(newcomer, entry)
    assert not judged(finding(f"arn:aws:iam::{B}:role/Any", B, access="effective"), replace_access(entry))


def replace_access(entry: AcceptSettings) -> AcceptSettings:
    return entry.model_copy(update={"access": ["potential", "effective"]})


def test_a_service_principal_finding_is_accepted_as_such() -> None:
    """`accept` refused it with a raw pydantic message and a URL."""
    service = finding("logs.amazonaws.com", B)
    entry = accepted_entry(service)
    assert entry.principals == ["logs.amazonaws.com"]
    assert judged(service, entry)
    assert not judged(finding("sns.amazonaws.com", B), entry)
    assert not judged(finding(f"arn:aws:iam::{B}:root", B), entry)


@pytest.fixture
def local_clock_off_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A local time zone whose date is not the UTC date now; yields local minus UTC, in days."""
    hour = datetime.now(UTC).hour
    zone, delta = ("Etc/GMT-14", 1) if hour >= 12 else ("Etc/GMT+12", -1)  # POSIX signs are reversed
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    assert date.today() - datetime.now(UTC).date() == timedelta(days=delta)
    yield delta
    monkeypatch.delenv("TZ")
    time.tzset()


def test_expires_is_bounded_on_the_utc_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], local_clock_off_utc: int
) -> None:
    """`--expires` was checked against the local date, the acceptance files against UTC: one could
    be written that the next scan refuses (or refused one it takes)."""
    config = tmp_path / "k.toml"
    config.write_text(f'[[accounts]]\nid = "{A}"\n\n[store]\npath = "k.db"\n\n[acceptance]\nmax_days = 30\n')
    store = Store(tmp_path / "k.db")
    store.save_scan(scan(1))
    (row,) = store.findings()
    store.close()
    last = datetime.now(UTC).date() + timedelta(days=30)

    def accept(expires: date) -> int:
        args = ["accept", row["id"], "--config", str(config), "--reason", "r", "--owner", "o"]
        code = main([*args, "--expires", expires.isoformat()])
        capsys.readouterr()
        return code

    assert accept(last) == 0
    assert accept(last + timedelta(days=1)) == 2


def test_a_finding_no_entry_can_name_is_refused_in_one_line_without_a_url() -> None:
    odd = finding("ExampleRole", B).to_dict()
    with pytest.raises(UsageError) as caught:
        entry_for(odd, entry_id="e1", reason="r", owner="o", expires=date(2027, 1, 1), ticket=None)
    text = str(caught.value)
    assert text.startswith(f"cannot accept {odd['id']}: principals: 'ExampleRole' is not a principal ARN")
    assert "\n" not in text and "https://" not in text and "Value error" not in text
