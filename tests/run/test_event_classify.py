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


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("kms-PutKeyPolicy.json", "resources", 5),  # issue #24, defect 3: this ended the consumer task
        ("kms-PutKeyPolicy.json", "resources", [5, None, {"ARN": 7}]),
        ("kms-CreateKey.json", "responseElements", {"keyMetadata": "x"}),  # and this
        ("kms-CreateKey.json", "responseElements", {"keyMetadata": {"arn": ["x"]}}),
        ("kms-PutKeyPolicy.json", "eventTime", {"not": "a time"}),
        ("kms-PutKeyPolicy.json", "recipientAccountId", 1234),
        ("kms-PutKeyPolicy.json", "eventName", {"PutKeyPolicy": 1}),
    ],
)
def test_one_odd_field_type_of_a_well_formed_event_is_dropped_not_raised(name: str, field: str, value: Any) -> None:
    """Issue #24, defect 3: well-formed JSON with one odd field type raised out of classify and
    ended real-time detection silently. It is a Change (the key is still named elsewhere) or a
    Dropped, never an exception."""
    assert isinstance(classify(fixture(name, **{field: value})), Change | Dropped)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(p.name for p in FIXTURES.glob("*.json"))),
    st.data(),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=5),
        max_leaves=20,
    ),
)
def test_any_field_of_a_real_event_replaced_by_anything_never_raises(name: str, data: Any, value: Any) -> None:
    """Property (issue #24, defect 3): a real CloudTrail event with any one field, at any depth,
    replaced by any JSON value is a Change or a Dropped."""
    event = json.loads((FIXTURES / name).read_text())
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append([*path, k])
                walk(v, [*path, k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append([*path, i])
                walk(v, [*path, i])

    walk(event, [])
    path = data.draw(st.sampled_from(paths))
    node = event
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    assert isinstance(classify(json.dumps(event)), Change | Dropped)


def test_no_label_value_comes_from_a_body() -> None:
    """Issue #24, defect 8: eventName and eventSource became label values (2,000 made-up names,
    2,000 series). Source and name are a fixed set: known ones, and `other`."""
    made_up = classify(fixture("kms-PutKeyPolicy.json", eventName="MadeUp1", eventSource="x.amazonaws.com"))
    assert isinstance(made_up, Dropped) and (made_up.source, made_up.name) == ("other", "other")
    unknown_name = classify(fixture("kms-Decrypt.json"))
    assert isinstance(unknown_name, Dropped) and (unknown_name.source, unknown_name.name) == ("kms", "other")
    known = classify(fixture("kms-PutKeyPolicy.json"))
    assert isinstance(known, Change) and (known.source, known.name) == ("kms", "PutKeyPolicy")
