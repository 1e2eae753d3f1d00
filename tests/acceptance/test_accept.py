"""Issue #15: accepted access, pure (kmsaudit/acceptance/matcher.py) and as configuration (one-line errors)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmsaudit.acceptance.matcher import Acceptance, KeyFacts
from kmsaudit.config.accept import AcceptSettings
from kmsaudit.config.settings import load_config
from kmsaudit.errors import ConfigError
from kmsaudit.model import Finding

A, B, C = "111122223333", "444455556666", "777788889999"
KEY = f"arn:aws:kms:us-east-1:{A}:key/k1"
TODAY = date(2026, 11, 27)


def finding(principal: str = f"arn:aws:iam::{B}:root", access: str = "potential", **extra: Any) -> Finding:
    base: dict[str, Any] = dict(
        key_arn=KEY,
        key_account=A,
        region="us-east-1",
        principal=principal,
        principal_account=principal.split(":")[4] if principal.startswith("arn:") else "*",
        access=access,
        zone="external",
        via=("key-policy",),
        actions=("kms:Decrypt",),
        conditional=False,
        conditions=(),
        severity="high",
    )
    base.update(extra)
    return Finding(**base)


def entry(**fields: Any) -> AcceptSettings:
    base: dict[str, Any] = dict(
        id="partner-decrypt",
        keys=[f"arn:aws:kms:*:{A}:key/*"],
        principals=[B],
        actions=["kms:Decrypt"],
        access=["potential"],
        reason="partner reads exports",
        owner="team-data",
        expires="2027-06-30",
    )
    base.update(fields)
    return AcceptSettings.model_validate(base)


def judge(f: Finding, *entries: AcceptSettings, today: date = TODAY, **kw: Any) -> Finding:
    return Acceptance(entries, today, kw.pop("orgs", None)).judge(f, kw.pop("facts", KeyFacts()))


def test_a_finding_within_an_entry_is_accepted_and_says_by_which() -> None:
    got = judge(finding(), entry())
    assert (got.accepted, got.accepted_by, got.outgrew) == (True, "partner-decrypt", None)
    assert got.to_dict()["accepted"] is True and got.to_dict()["accepted_by"] == "partner-decrypt"


def test_every_finding_carries_the_fields_even_when_nothing_accepts_it() -> None:
    assert {"accepted": False, "accepted_by": None}.items() <= finding().to_dict().items()


@pytest.mark.parametrize(
    ("grown", "why"),
    [
        (finding(actions=("kms:Decrypt", "kms:Encrypt")), "more actions"),
        (finding(access="effective", principal=f"arn:aws:iam::{B}:role/R"), "potential → effective"),
    ],
)
def test_a_finding_that_outgrows_its_entry_is_not_accepted_and_names_it(grown: Finding, why: str) -> None:
    got = judge(grown, entry())
    assert (got.accepted, got.accepted_by, got.outgrew) == (False, None, "partner-decrypt"), why


def test_conditional_to_unconditional_outgrows_an_entry_for_conditional_access() -> None:
    cond = entry(conditional=True)
    assert judge(finding(conditional=True), cond).accepted
    assert judge(finding(conditional=False), cond).outgrew == "partner-decrypt"


def test_an_expired_entry_accepts_nothing() -> None:
    got = judge(finding(), entry(expires="2026-11-26"))
    assert (got.accepted, got.outgrew) == (False, None)
    assert judge(finding(), entry(expires="2026-11-27")).accepted  # the last day still counts


def test_an_account_covers_its_root_and_every_principal_in_it_and_nothing_else() -> None:
    role = finding(principal=f"arn:aws:iam::{B}:role/Reader", access="effective")
    assert judge(role, entry(access=["effective"])).accepted
    assert not judge(finding(principal=f"arn:aws:iam::{C}:root"), entry()).accepted


def test_principal_globs_organizations_aliases_and_tags() -> None:
    role = finding(principal=f"arn:aws:iam::{B}:role/backup-nightly", access="effective")
    assert judge(role, entry(principals=["arn:aws:iam::*:role/backup-*"], access=["effective"])).accepted
    orgs = {"o-partner1234": frozenset({B})}
    assert judge(finding(), entry(principals=["org:o-partner1234"]), orgs=orgs).accepted
    assert not judge(finding(), entry(principals=["org:o-partner1234"])).accepted  # organization unknown
    facts = KeyFacts(aliases=("alias/exports",), tags={"team": "data"})
    assert judge(finding(), entry(keys=["alias/exports"]), facts=facts).accepted
    assert judge(finding(), entry(keys=["tag:team=data"]), facts=facts).accepted
    assert not judge(finding(), entry(keys=["tag:team=other"]), facts=facts).accepted


def test_public_access_needs_an_entry_that_allows_it() -> None:
    public = finding(principal="*", access="public")
    assert judge(public, entry(principals=["*"], access=["public"], allow_public=True)).accepted
    with pytest.raises(ValueError, match="allow_public"):
        entry(principals=["*"], access=["public"])


def test_patterns_built_to_backtrack_match_in_linear_time() -> None:
    hostile = "arn:aws:kms:" + "*a" * 40 + "b"
    started = time.perf_counter()
    got = judge(
        finding(principal="arn:aws:iam::" + B + ":role/" + "a" * 5000),
        entry(keys=[hostile], principals=["arn:aws:iam::*:role/" + "*a" * 40 + "b"]),
    )
    assert not got.accepted and time.perf_counter() - started < 5  # a backtracking matcher: hours


def test_ten_thousand_entries_judge_findings_through_the_account_index() -> None:
    entries = [entry(id=f"e{i}", principals=[f"{100000000000 + i}"]) for i in range(10_000)]
    acceptance = Acceptance(entries, TODAY)
    hit = finding(principal="arn:aws:iam::100000004242:root")
    assert acceptance.judge(hit).accepted_by == "e4242"
    assert not acceptance.judge(finding()).accepted


KEY_PATTERNS = [
    KEY,
    f"arn:aws:kms:us-east-1:{A}:key/*",
    f"arn:aws:kms:*:{A}:key/k?",
    "arn:aws:kms:us-east-1:*",
    "arn:aws:kms:us-east-1:1111*",
    f"arn:aws:kms:*:{A}:key/k?",
    f"arn:aws:kms:us-east-?:{B}:*",
    "arn:aws:kms:*:*:key/k1",
    f"arn:aws:kms:*?{A}:key/*",
    "arn:aws:kms:us-east-1:*:key/*:x",
    "arn:aws:kms:eu-west-1:*",
    "arn:*",
    "alias/app",
    "tag:team=data",
]
PRINCIPAL_PATTERNS = [
    B,
    C,
    f"arn:aws:iam::{B}:role/App*",
    "arn:aws:iam::*:role/App?",
    f"arn:aws:iam::{C}:root",
    "org:o-abcdefghij",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sets(st.sampled_from(KEY_PATTERNS), min_size=1), st.sets(st.sampled_from(PRINCIPAL_PATTERNS), min_size=1)
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(
        [
            KEY,
            f"arn:aws:kms:eu-west-1:{A}:key/k2",
            f"arn:aws:kms:us-east-1:{B}:key/k3",
            f"arn:aws:kms:us-east-1:{A}:key/k1:x",
        ]
    ),
    st.sampled_from([f"arn:aws:iam::{B}:role/App1", f"arn:aws:iam::{C}:root", f"arn:aws:iam::{A}:role/App2"]),
    st.sampled_from([KeyFacts(), KeyFacts(("alias/app",), {"team": "data"})]),
)
def test_the_index_finds_exactly_the_entries_a_comparison_with_each_would(
    patterns: list[tuple[set[str], set[str]]], key: str, principal: str, facts: KeyFacts
) -> None:
    """Property: indexing entries by account and key bucket loses no match — accepted exactly when
    some entry accepts the finding, by one of them, and `outgrew` only when one covers it."""
    orgs = {"o-abcdefghij": frozenset({C})}
    entries = [entry(id=f"e{i}", keys=sorted(k), principals=sorted(p)) for i, (k, p) in enumerate(patterns)]
    f = finding(principal=principal, key_arn=key)
    got = Acceptance(entries, TODAY, orgs).judge(f, facts)
    accepting = {e.id for e in entries if Acceptance([e], TODAY, orgs).judge(f, facts).accepted}
    covering = {e.id for e in entries if Acceptance([e], TODAY, orgs).judge(f, facts).outgrew}
    assert got.accepted == bool(accepting)
    assert got.accepted_by in (accepting or {None})
    assert (got.outgrew in covering) if not accepting and covering else got.outgrew is None


# -- configuration: one line per mistake, naming the entry ------------------------------------
CONFIG = '[[accounts]]\nid = "111122223333"\n'


def _accept_block(**fields: str) -> str:
    base = {
        "id": '"partner-decrypt"',
        "keys": f'["arn:aws:kms:*:{A}:key/*"]',
        "principals": f'["{B}"]',
        "actions": '["kms:Decrypt"]',
        "reason": '"partner reads exports"',
        "owner": '"team-data"',
        "expires": "2027-06-30",
    }
    base.update(fields)
    return "\n[[accept]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items())


def test_entries_in_the_config_and_in_files_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "accepted.toml").write_text(_accept_block(id='"backup"'))
    path = tmp_path / "k.toml"
    path.write_text(CONFIG + '\n[acceptance]\nfiles = ["accepted.toml"]\n' + _accept_block())
    config = load_config(path, today=TODAY)
    assert [e.id for e in config.accept] == ["partner-decrypt", "backup"]
    assert config.accept[0].expires == date(2027, 6, 30)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (_accept_block(access='["public"]', principals='["*"]'), "entry 'partner-decrypt' accepts public access"),
        (_accept_block() + _accept_block(), "id 'partner-decrypt' is used twice"),
        (_accept_block(expires="2036-01-01"), "more than [acceptance] max_days (365) ahead"),
        (_accept_block(colour='"blue"'), "accept[1].colour: unknown key"),
        (_accept_block(actions='["s3:GetObject"]'), "matches no KMS action"),
        (_accept_block(expires='"next year"'), "accept[1].expires"),
        (_accept_block(principals='["ExampleRole"]'), "is not a principal ARN"),
    ],
)
def test_mistakes_are_one_line_naming_the_entry(tmp_path: Path, block: str, message: str) -> None:
    path = tmp_path / "k.toml"
    path.write_text(CONFIG + block)
    with pytest.raises(ConfigError) as caught:
        load_config(path, today=TODAY)
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith(str(path))


def test_a_date_in_the_past_is_valid_configuration(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text(CONFIG + _accept_block(expires='"2020-01-31"'))  # a string is accepted too
    assert load_config(path, today=TODAY).accept[0].expires == date(2020, 1, 31)


def test_ten_thousand_entries_in_a_file_load_and_a_hostile_file_is_one_line(tmp_path: Path) -> None:
    big = "".join(_accept_block(id=f'"e{i}"', principals=f'["{100000000000 + i}"]') for i in range(10_000))
    (tmp_path / "accepted.toml").write_text(big)
    path = tmp_path / "k.toml"
    path.write_text(CONFIG + '\n[acceptance]\nfiles = ["accepted.toml"]\n')
    assert len(load_config(path, today=TODAY).accept) == 10_000
    (tmp_path / "accepted.toml").write_text('[[accept]]\nid = "x"\n' + "a = [" * 2000)
    proc = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "findings", "--config", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "accepted.toml" in proc.stderr
