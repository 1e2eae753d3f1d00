"""Issue #17: which CloudTrail event re-reads what (kmsaudit/run/events.py `classify`, pure), on the
event shapes EventBridge delivers into SQS (tests/data/cloudtrail, from the KMS, IAM and
Organizations CloudTrail documentation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmsaudit.run.events import Change, Dropped, Seen, classify

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "cloudtrail"
ARN = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def fixture(name: str, **detail: Any) -> str:
    event = json.loads((FIXTURES / name).read_text())
    event["detail"].update(detail)
    return json.dumps(event)


@pytest.mark.parametrize("name", ["kms-PutKeyPolicy.json", "kms-CreateGrant.json", "kms-CreateKey.json"])
def test_key_events_name_the_key_whether_the_event_gives_an_id_or_an_arn(name: str) -> None:
    change = classify(fixture(name))
    assert isinstance(change, Change)
    assert (change.kind, change.key_arn, change.account, change.region) == ("key", ARN, "111122223333", "us-west-2")
    assert change.event_id and change.event_time > 0


def test_a_bare_key_id_without_resources_is_in_the_event_account_and_region() -> None:
    body = fixture("kms-PutKeyPolicy.json", resources=[], awsRegion="eu-west-1")
    change = classify(body)
    assert isinstance(change, Change)
    assert change.key_arn == "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_a_deleted_alias_is_resolved_later_from_the_last_state() -> None:
    change = classify(fixture("kms-DeleteAlias.json"))
    assert isinstance(change, Change) and (change.kind, change.alias, change.key_arn) == (
        "alias",
        "alias/ExampleAlias",
        "",
    )


def test_iam_and_organizations_changes_ask_for_their_account_or_the_organization() -> None:
    iam = classify(fixture("iam-PutRolePolicy.json"))
    org = classify(fixture("organizations-UpdatePolicy.json"))
    assert isinstance(iam, Change) and (iam.kind, iam.account) == ("iam", "111122223333")
    assert isinstance(org, Change) and org.kind == "organization"


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (fixture("kms-ScheduleKeyDeletion-denied.json"), "failed-call"),  # it changed nothing
        (fixture("kms-Decrypt.json"), "ignored"),  # a use of the key, not a change of who can use it
        ("not json", "malformed"),
        (json.dumps({"detail": "x"}), "malformed"),
        (json.dumps({"detail": {"eventName": "PutKeyPolicy"}}), "malformed"),  # no eventID
        (fixture("kms-PutKeyPolicy.json", requestParameters={"keyId": "not-a-key"}, resources=[]), "malformed"),
    ],
)
def test_what_is_dropped_and_why(body: str, outcome: str) -> None:
    dropped = classify(body)
    assert isinstance(dropped, Dropped) and dropped.outcome == outcome


def test_events_from_accounts_not_audited_are_dropped() -> None:
    dropped = classify(fixture("kms-PutKeyPolicy.json"), audited={"999999999999"})
    assert isinstance(dropped, Dropped) and dropped.outcome == "unaudited"
    assert isinstance(classify(fixture("kms-PutKeyPolicy.json"), audited={"111122223333"}), Change)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=5),
        max_leaves=30,
    )
)
def test_classify_never_raises(document: Any) -> None:
    """Property: whatever the queue holds, a message is a Change or a Dropped, never a crash."""
    for body in (
        json.dumps(document),
        json.dumps({"detail": document}),
        json.dumps(
            {
                "detail": {
                    "eventName": "PutKeyPolicy",
                    "eventID": "e",
                    "eventSource": "kms.amazonaws.com",
                    "requestParameters": document,
                }
            }
        ),
    ):
        assert isinstance(classify(body), Change | Dropped)


def test_seen_remembers_the_latest_ids_only() -> None:
    seen = Seen(size=2)
    for event_id in ("a", "b", "c"):
        seen.add(event_id)
    assert "a" not in seen and "b" in seen and "c" in seen
