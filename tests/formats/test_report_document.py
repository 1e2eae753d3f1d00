"""Issue #27: the HTML report as an auditor's document — what drifted (before → after), who
accepted what (owner, reason, expiry, ticket; expired entries marked), account names beside ids,
a matrix that reads "worst high · 6 findings" with a legend, and each finding expandable to its
explanation and remediation when the finding carries them. Rendered without AWS; the layout at
1,280 px is looked at in Chromium in tests/aws/test_report.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from html import unescape

from kmsaudit.config.accept import AcceptSettings
from kmsaudit.formats.report import render_report
from kmsaudit.model import Finding

A, B, PARTNER = "111122223333", "444455556666", "555566667777"
KEY = f"arn:aws:kms:us-east-1:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SNAPSHOT = {"id": 7, "finished_at": 1_796_000_000.0, "complete": True}  # 2026-11-30 00:53 UTC


@dataclass
class Scope:
    account: str
    region: str
    ok: bool = True
    error_code: str = ""


def finding(principal: str, severity: str = "high", **extra: object) -> dict[str, object]:
    account = principal.split(":")[4] if principal.startswith("arn:") else "*"
    f = Finding(KEY, A, "us-east-1", principal, account, "potential", "external", ("key-policy",),
                ("kms:Decrypt",), False, (), severity)  # fmt: skip
    return {**f.to_dict(), **extra}


def text(html: str) -> str:
    """The visible text, one space between words."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", body)))


def render(findings: list[dict[str, object]], events: list[dict[str, object]] = (), **kwargs: object) -> str:  # type: ignore[assignment]
    return render_report(findings, [Scope(A, "us-east-1")], SNAPSHOT, list(events), {}, "f" * 16, **kwargs)  # type: ignore[arg-type]


def test_the_drift_table_says_what_changed_before_and_after() -> None:
    before = finding(f"arn:aws:iam::{PARTNER}:root")
    after = {**before, "actions": ["kms:Decrypt", "kms:Encrypt"]}
    events = [
        {"kind": "widened", "key_arn": KEY, "principal": before["principal"], "before": before, "after": after,
         "severity": "high", "account": A, "region": "us-east-1", "snapshot_id": 7, "detected_at": 1_795_990_000.0},
        {"kind": "policy-changed", "key_arn": KEY, "principal": "", "before": {"policy_sha256": "a" * 64},
         "after": {"policy_sha256": "b" * 64}, "severity": "low", "account": A, "region": "us-east-1",
         "snapshot_id": 6, "detected_at": 1_795_900_000.0},
    ]  # fmt: skip
    html = render([after], events)
    table = text(html.split('id="drift"', 1)[1].split("</table>", 1)[0])
    assert "2026-11-29 22:06 UTC high widened" in table  # what, when (UTC), severity
    assert "Decrypt (potential) → Decrypt, Encrypt (potential) +Encrypt" in table  # before → after
    assert "policy aaaaaaaaaaaa… → policy bbbbbbbbbbbb…" in table
    assert table.index("widened") < table.index("policy-changed")  # newest first


def test_the_drift_table_is_capped_and_says_how_many_more() -> None:
    events = [
        {"kind": "key-created", "key_arn": f"{KEY}{i}", "principal": "", "before": None,
         "after": {"policy_sha256": "c" * 64}, "severity": "low", "account": A, "region": "us-east-1",
         "snapshot_id": 7, "detected_at": 1_795_000_000.0 + i}
        for i in range(230)
    ]  # fmt: skip
    html = render([], events)
    assert html.count('<tr class="event"') == 200
    assert "30 more events in the period, not shown here" in text(html)
    assert f"{KEY}229<" in html and f"{KEY}29<" not in html  # the newest are the ones shown


def test_an_accepted_finding_shows_owner_reason_expiry_and_ticket_and_an_expired_entry_is_marked() -> None:
    entry = AcceptSettings(id="partner-decrypt", keys=[KEY], principals=[PARTNER], actions=["kms:Decrypt"],
                           reason="partner reads exports", owner="team-data", expires=date(2027, 6, 30),
                           ticket="SEC-142")  # fmt: skip
    old = entry.model_copy(update={"id": "old-vendor", "owner": "team-ops", "expires": date(2026, 1, 31)})
    accepted = finding(f"arn:aws:iam::{PARTNER}:root", accepted=True, accepted_by="partner-decrypt")
    html = render([accepted], acceptances=[entry, old], today=date(2026, 12, 1))
    row = text(html.split('id="accepted"', 1)[1].split("</table>", 1)[0])
    assert "partner-decrypt team-data partner reads exports 2027-06-30 SEC-142" in row
    assert "1 acceptance entry has expired (their findings alert again): old-vendor (team-ops, expired 2026-01-31" in (
        text(html)
    )
    # The same entry, read on a day after its expiry: the accepted finding is marked expired.
    later = render([accepted], acceptances=[entry], today=date(2027, 7, 1))
    assert '<tr class="accepted-finding expired"' in later
    assert "2027-06-30 expired" in text(later.split('id="accepted"', 1)[1].split("</table>", 1)[0])


def test_account_names_are_shown_beside_ids() -> None:
    html = render([finding(f"arn:aws:iam::{PARTNER}:root")], account_names={A: "payments-prod", PARTNER: "partner"})
    assert "payments-prod 111122223333" in text(html.split('id="matrix"', 1)[1].split("</table>", 1)[0])
    assert "partner 555566667777" in text(html.split('id="findings"', 1)[1])


def test_the_matrix_reads_worst_severity_and_count_and_has_a_legend() -> None:
    six = [finding(f"arn:aws:iam::{PARTNER}:role/R{i}") for i in range(6)]
    html = render([*six, finding(f"arn:aws:iam::{B}:role/T", "low", accepted=True, accepted_by="x")])
    cell = text(html.split('id="matrix"', 1)[1].split("</table>", 1)[0])
    assert "worst high · 6 findings" in cell and "high (6)" not in cell
    legend = text(html.split('id="legend"', 1)[1].split("</ul>", 1)[0])
    for word in ("critical", "high", "medium", "low", "clear", "failed", "not audited"):
        assert word in legend


EXPLANATION = [
    {"source": "key-policy", "name": "default", "statement": "Partner", "line": 14, "effect": "Allow",
     "part": "grants", "conditions": []},
    {"source": "scp", "name": "p-1234 <b>deny</b>", "statement": 0, "line": 3, "effect": "Deny",
     "part": "undecided", "conditions": [{"operator": "StringEquals", "key": "aws:SourceVpc", "values": ["vpc-1"]}]},
]  # fmt: skip
REMEDIATION = [
    {"kind": "key-policy", "summary": "remove 555566667777 from statement Partner",
     "key_policy": '{"Version": "2012-10-17", "Statement": []}', "verified": True, "also_changes": ["f" * 32]},
    {"kind": "grant", "summary": "revoke the grant", "grant_id": "<g1>", "verified": False, "also_changes": []},
]  # fmt: skip


def test_a_finding_expands_to_its_explanation_and_remediation_when_it_carries_them() -> None:
    plain = finding(f"arn:aws:iam::{B}:role/Plain")
    rich = finding(f"arn:aws:iam::{PARTNER}:root", explanation=EXPLANATION, remediation=REMEDIATION)
    html = render([rich, plain])
    blocks = html.split('<tbody class="finding')[1:]
    shown = next(b for b in blocks if f"{PARTNER}:root" in b)
    other = next(b for b in blocks if "role/Plain" in b)
    assert "<details" in shown and "<details" in other  # every row expands
    why = text(shown.split('data-slot="explanation"', 1)[1].split("</table>", 1)[0])
    assert "key-policy default Partner 14 Allow grants" in why
    assert "scp p-1234 <b>deny</b> 0 3 Deny undecided StringEquals aws:SourceVpc = vpc-1" in why
    assert "&lt;b&gt;deny&lt;/b&gt;" in shown and "<b>deny</b>" not in shown  # escaped
    fix = text(shown.split('data-slot="remediation"', 1)[1])
    assert "key-policy : remove 555566667777 from statement Partner verified" in fix
    assert f"also changes: {'f' * 32}" in fix and '{"Version": "2012-10-17", "Statement": []}' in fix
    assert "grant : revoke the grant not verified" in fix
    assert f"aws kms revoke-grant --key-id {KEY} --grant-id <g1>" in fix and "&lt;g1&gt;" in shown
    assert 'data-slot="explanation"' not in other and 'data-slot="remediation"' not in other


def test_values_in_the_new_sections_cannot_inject_markup() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    f = finding(f"arn:aws:iam::{PARTNER}:role/{hostile}", accepted=True, accepted_by="e1")
    entry = AcceptSettings(id="e1", keys=[KEY], principals=[PARTNER], actions=["kms:Decrypt"], reason=hostile,
                           owner=hostile, expires=date(2027, 1, 1), ticket=hostile)  # fmt: skip
    event = {"kind": "added", "key_arn": KEY, "principal": f["principal"], "before": None, "after": f,
             "severity": "high", "account": A, "region": "us-east-1", "snapshot_id": 7,
             "detected_at": 1.79e9}  # fmt: skip
    html = render([f], [event], acceptances=[entry], account_names={PARTNER: hostile}, today=date(2026, 12, 1))
    assert "<img" not in html and html.count("&lt;img src=x onerror=alert(1)&gt;") >= 6
