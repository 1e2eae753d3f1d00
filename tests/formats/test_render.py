"""What people read (issue #13): tables with headers and times, conditions that say where they
come from, keys with their aliases, AWS-managed keys marked, plurals."""

from __future__ import annotations

import io
import re

import pytest

from kmsaudit.formats.render import write_drift, write_findings
from kmsaudit.model import Finding

KEY = "arn:aws:kms:us-east-1:111122223333:key/k1"


def finding(**overrides: object) -> Finding:
    base = dict(
        key_arn=KEY,
        key_account="111122223333",
        region="us-east-1",
        principal="*",
        principal_account="*",
        access="public",
        zone="external",
        via=("key-policy",),
        actions=("kms:Decrypt",),
        conditional=True,
        conditions=(
            {
                "source": "key-policy",
                "effect": "Allow",
                "sid": "ViaS3",
                "operator": "StringEquals",
                "key": "kms:ViaService",
                "values": ["s3.us-east-1.amazonaws.com"],
            },
            {
                "source": "key-policy",
                "effect": "Deny",
                "operator": "Bool",
                "key": "aws:SecureTransport",
                "values": ["false"],
            },
        ),
        severity="high",
    )
    base.update(overrides)
    return Finding(**base)  # type: ignore[arg-type]


def test_the_findings_table_names_each_conditions_statement_and_effect() -> None:
    out = io.StringIO()
    write_findings([finding()], "table", out)
    text = out.getvalue()
    assert 'key-policy "ViaS3" Allow if StringEquals kms:ViaService=s3.us-east-1.amazonaws.com' in text
    assert "key-policy (no Sid) Deny if Bool aws:SecureTransport=false" in text
    assert text.rstrip().endswith("1 finding on 1 key: 1 high")


def test_keys_show_their_aliases_and_aws_managed_keys_are_marked() -> None:
    out = io.StringIO()
    other = "arn:aws:kms:us-east-1:111122223333:key/k2"
    names = {
        KEY: {"aliases": ["alias/app"], "manager": "CUSTOMER"},
        other: {"aliases": ["alias/aws/ebs"], "manager": "AWS"},
    }
    write_findings([finding(), finding(key_arn=other)], "table", out, names=names)
    text = out.getvalue()
    assert f"{KEY}  (alias/app)" in text
    assert f"{other}  (alias/aws/ebs, AWS managed)" in text
    assert "2 findings on 2 keys" in text


def test_the_drift_table_has_a_header_and_a_time_column() -> None:
    out = io.StringIO()
    event = {
        "kind": "added",
        "key_arn": KEY,
        "principal": "arn:aws:iam::444455556666:root",
        "before": None,
        "after": {"actions": ["kms:Decrypt"]},
        "severity": "high",
        "detected_at": 1795000000.0,
    }
    write_drift([event], "table", out)
    header, row = out.getvalue().splitlines()
    assert re.match(r"DETECTED \(UTC\) +SEVERITY +KIND +KEY OR SCOPE +PRINCIPAL +CHANGE", header)
    assert re.match(
        r"2026-11-18 \d\d:\d\d:\d\d +high +added +arn:aws:kms:\S+ +arn:aws:iam::444455556666:root +Decrypt", row
    )


def test_accepted_findings_are_marked_and_dimmed_on_a_terminal_and_counted() -> None:
    """Issue #15: accepted access stays in the table, marked with its entry, dimmed where colour
    is on; a finding that went beyond its entry says which."""
    accepted = finding(principal="arn:aws:iam::444455556666:role/Ingest", accepted=True, accepted_by="partner-ingest")
    grown = finding(principal="arn:aws:iam::444455556666:role/Other", outgrew="partner-other", conditional=False)
    plain, tty = io.StringIO(), io.StringIO()
    write_findings([accepted, grown], "table", plain)
    write_findings([accepted, grown], "table", tty, colour=True)
    row = next(line for line in plain.getvalue().splitlines() if "role/Ingest" in line)
    assert row.endswith("[accepted: partner-ingest]") and "\033" not in plain.getvalue()
    assert "[beyond acceptance partner-other]" in plain.getvalue()
    assert "(1 accepted)" in plain.getvalue()
    dimmed = next(line for line in tty.getvalue().splitlines() if "role/Ingest" in line)
    assert dimmed.startswith("\033[2m") and dimmed.endswith("\033[0m")
    other = next(line for line in tty.getvalue().splitlines() if "role/Other" in line)
    assert not other.startswith("\033[2m")


def test_the_progress_line_shows_scopes_done_of_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    """`kmsaudit scan` on a terminal: the line counts scopes against the total once the scan
    knows it (the collector, or the scan's process for worker processes, says `planned`)."""
    from kmsaudit.cli.terminal import Progress

    now = [100.0]
    progress = Progress(True, clock=lambda: now[0])
    progress("planned", 6)
    progress("accounts", 3)
    progress("iam", 1)
    assert (
        capsys.readouterr().err.rsplit("\r", 1)[-1].strip()
        == "scanning: IAM of 1/3 accounts, 0/6 scopes done, 0 keys read"
    )
    progress("keys", 5)
    now[0] = 130.0  # one scope of six in 30 s: about 2m 30s for the five left
    progress("scopes", 1)
    line = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert line.strip() == "scanning: IAM of 1/3 accounts, 1/6 scopes done, 5 keys read, about 2m 30s left"
    now[0] = 190.0
    for _ in range(5):
        progress("scopes", 1)
    line = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert line.strip() == "scanning: IAM of 1/3 accounts, 6/6 scopes done, 5 keys read"  # done: no estimate
    progress.close()
    assert capsys.readouterr().err == "\r\x1b[K"
