"""Issue #24: every path keeps the promise (SPEC §5, "Every snapshot accounts for every configured
scope"): an event's re-read, like a scan, never turns a failure into an all-clear.

The daemon's own code runs here in-process (`Daemon.scan_once`, `Daemon.reaudit`) against moto's
server through tests/awsproxy.py, which denies what the audit role is about to lose; each test
names the defect of the issue it reproduces.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from awsproxy import AwsProxy
from estate import A, B, Estate, client, config_text, key_policy
from test_events import event

from kmsaudit.config.settings import load_config
from kmsaudit.run.daemon import Daemon
from kmsaudit.run.events import Message, classify
from kmsaudit.store.database import Store

SCOPES = 6  # accounts A, B, C × us-east-1, eu-west-1 (tests/estate.py)


@pytest.fixture
async def daemon(tmp_path: Path, estate: Estate, proxy: AwsProxy) -> AsyncIterator[Daemon]:
    path = tmp_path / "k.toml"
    path.write_text(config_text(store=str(tmp_path / "k.db")))
    d = Daemon(path, load_config(path))
    yield d
    if d.event_sessions is not None:  # as the daemon does when it stops
        await d.event_sessions.sessions.__aexit__(None, None, None)


def messages(*bodies: str) -> list[Message]:
    return [Message("queue", f"receipt-{i}", classify(body)) for i, body in enumerate(bodies)]


def latest(daemon: Daemon) -> tuple[dict[str, Any], list[tuple[str, str, bool]], list[dict[str, Any]]]:
    store = Store(daemon.config.store.path, create=False)
    try:
        snapshot = store.snapshot()
        assert snapshot is not None
        scopes = [(s.account, s.region, s.ok) for s in store.scope_view()]
        return snapshot, scopes, store.findings()
    finally:
        store.close()


def metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    value = daemon.metrics.registry.get_sample_value(name, labels)
    return value


async def test_a_failed_re_read_keeps_the_whole_estate(daemon: Daemon, estate: Estate, proxy: AwsProxy) -> None:
    """Defect 1: a re-read whose scope fails (the audit role lost ListAliases) committed a snapshot
    of 1 scope of 6: findings 12 -> 5, the public key's series gone, the next event of another
    scope dropped as unknown-scope, the failed event counted reaudited."""
    await daemon.scan_once()
    before, scopes, findings = latest(daemon)
    assert len(scopes) == SCOPES and all(ok for _, _, ok in scopes)
    public = metric(daemon, "kmsaudit_findings", access="public", zone="external", severity="high", accepted="false")
    assert public == 1

    proxy.deny_operations = {"ListAliases"}
    handled = await daemon.reaudit(messages(event("kms-PutKeyPolicy.json", estate.keys["shared"])))
    after, scopes_after, findings_after = latest(daemon)
    assert after["id"] > before["id"]
    assert len(scopes_after) == SCOPES, "a snapshot must account for every configured scope"
    assert (A, "us-east-1", False) in scopes_after  # the re-read's scope failed: its last good state shows
    assert after["findings"] == before["findings"] and len(findings_after) == len(findings)
    assert sorted(f["id"] for f in findings_after) == sorted(f["id"] for f in findings)
    assert metric(daemon, "kmsaudit_findings", access="public", zone="external", severity="high", accepted="false") == 1
    assert not after["complete"]
    assert metric(daemon, "kmsaudit_events_total", source="kms", event="PutKeyPolicy", outcome="reaudited") is None
    assert handled is not None and handled == set(), "a failed re-read is not handled: its message stays for a retry"

    proxy.deny_operations = set()
    other = messages(event("kms-PutKeyPolicy.json", estate.keys["public"]))
    assert {m.receipt for m in other} == await daemon.reaudit(other)  # the next event of another scope is read
    assert metric(daemon, "kmsaudit_events_total", source="kms", event="PutKeyPolicy", outcome="reaudited") == 1
    assert metric(daemon, "kmsaudit_events_total", source="kms", event="PutKeyPolicy", outcome="unknown-scope") is None
    _, scopes_now, _ = latest(daemon)
    assert len(scopes_now) == SCOPES


async def test_a_re_read_after_a_scan_whose_iam_failed_removes_no_access(
    daemon: Daemon, estate: Estate, proxy: AwsProxy
) -> None:
    """Defect 2: after a scan that could not read IAM, a re-read carried no IAM failure, so the
    account's effective access read as removed (and came back as added later)."""
    await daemon.scan_once()
    _, _, first = latest(daemon)
    effective = {f["id"] for f in first if f["access"] == "effective" and "iam-policy" in f["via"]}
    assert effective  # B's Reader decrypts the shared key through its role policy
    proxy.deny_operations = {"GetAccountAuthorizationDetails"}
    await daemon.scan_once()  # IAM unreadable: effective access carried over
    _, _, carried = latest(daemon)
    assert effective <= {f["id"] for f in carried}
    proxy.deny_operations = set()
    await daemon.reaudit(messages(event("kms-PutKeyPolicy.json", estate.keys["shared"])))
    _, _, after = latest(daemon)
    assert effective <= {f["id"] for f in after}
    store = Store(daemon.config.store.path, create=False)
    try:
        removed = [e for e in store.drift(0) if e["kind"] == "removed"]
    finally:
        store.close()
    assert removed == []


async def test_an_event_is_not_covered_by_a_scan_that_failed_to_read_its_scope(
    daemon: Daemon, estate: Estate, proxy: AwsProxy
) -> None:
    """Defect 4: an event counted as covered by the last full scan although that scan's read of
    the event's scope failed: the change was never read."""
    key = estate.keys["narrowed"]
    body = event("kms-PutKeyPolicy.json", key)  # happened before the next full scan starts
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["narrowed"],
        PolicyName="default",
        Policy=key_policy(A, {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}),
    )
    proxy.deny_operations = {"ListKeys"}  # the full scan fails every scope
    await daemon.scan_once()
    proxy.deny_operations = set()
    handled = await daemon.reaudit(messages(body))
    assert handled == {"receipt-0"}
    assert metric(daemon, "kmsaudit_events_total", source="kms", event="PutKeyPolicy", outcome="covered") is None
    _, _, findings = latest(daemon)
    assert any(f["key_arn"] == key and f["principal"] == "*" and f["access"] == "public" for f in findings)


async def test_the_old_key_of_an_updated_alias_loses_it_at_once(daemon: Daemon, estate: Estate) -> None:
    """Defect 7: after UpdateAlias the old key kept the alias until the next scan."""
    await daemon.scan_once()
    kms = client("kms", A)
    kms.update_alias(AliasName="alias/shared", TargetKeyId=estate.ids["granted"])
    body = json.loads(event("kms-PutKeyPolicy.json", estate.keys["granted"]))
    detail = body["detail"]
    detail["eventName"] = "UpdateAlias"
    detail["requestParameters"] = {"aliasName": "alias/shared", "targetKeyId": estate.ids["granted"]}
    await daemon.reaudit(messages(json.dumps(body)))
    store = Store(daemon.config.store.path, create=False)
    try:
        names = store.key_names()
    finally:
        store.close()
    assert names.get(estate.keys["granted"], {}).get("aliases") == ["alias/shared"]
    assert "alias/shared" not in names.get(estate.keys["shared"], {}).get("aliases", [])


async def test_a_re_read_advances_no_freshness_of_a_scope_it_did_not_read(daemon: Daemon, estate: Estate) -> None:
    """Defect 7: a re-read advanced kmsaudit_last_successful_scan_timestamp_seconds of every scope,
    read or not (hiding KmsAuditScanStale)."""
    await daemon.scan_once()

    def fresh() -> dict[tuple[str, str], float]:
        return {
            (s.labels["account"], s.labels["region"]): s.value
            for m in daemon.metrics.registry.collect()
            if m.name == "kmsaudit_last_successful_scan_timestamp_seconds"
            for s in m.samples
        }

    first = fresh()
    assert len(first) == SCOPES
    await daemon.reaudit(messages(event("kms-PutKeyPolicy.json", estate.keys["shared"])))
    assert fresh() == first  # one key re-read is not a complete read of any scope


async def test_re_reads_leave_no_handler_behind_on_the_long_lived_client(daemon: Daemon, estate: Estate) -> None:
    """Defect 7: every re-read registered a response handler (and kept an Api object) on the
    daemon's long-lived KMS client: 30 re-reads, 31 handlers."""
    await daemon.scan_once()
    for _ in range(3):
        await daemon.reaudit(messages(event("kms-PutKeyPolicy.json", estate.keys["shared"])))
    assert daemon.event_sessions is not None
    clients = daemon.event_sessions.sessions.clients()
    kms = [c for c in clients if c.meta.service_model.service_name == "kms"]
    assert kms

    def handlers() -> int:  # what a ListGrants response reaches on each client (botocore's trie)
        return sum(len(c.meta.events._emitter._handlers.prefix_search("response-received.kms.ListGrants")) for c in kms)

    before = handlers()
    for _ in range(10):
        await daemon.reaudit(messages(event("kms-PutKeyPolicy.json", estate.keys["shared"])))
    assert handlers() == before


async def test_the_event_labels_are_a_fixed_set(daemon: Daemon, estate: Estate) -> None:
    """Defect 8: eventName and eventSource of a body became label values: 2,000 made-up names,
    2,000 series."""
    await daemon.scan_once()
    bodies = []
    for i in range(200):
        body = json.loads(event("kms-PutKeyPolicy.json", estate.keys["shared"]))
        body["detail"]["eventName"] = f"MadeUp{i}"
        body["detail"]["eventSource"] = f"made-up-{i}.amazonaws.com"
        bodies.append(json.dumps(body))
    for m in messages(*bodies):  # what the consumer counts for each (tests/run: it counts this way)
        daemon.metrics.count_event(m.outcome.source, m.outcome.name, m.outcome.outcome)
    series = {
        tuple(sorted(s.labels.items()))
        for m in daemon.metrics.registry.collect()
        if m.name == "kmsaudit_events"
        for s in m.samples
        if s.name == "kmsaudit_events_total"
    }
    assert len(series) <= 2, series
    assert all(dict(labels)["event"] == "other" and dict(labels)["source"] == "other" for labels in series)
    assert B  # the estate's other accounts are untouched


async def test_a_one_key_re_read_does_not_make_a_failed_scope_look_read(
    daemon: Daemon, estate: Estate, proxy: AwsProxy
) -> None:
    """Review of issue #24: a scope failing its full scan (ListKeys denied), then one key of it
    re-read well, was written ok and the snapshot complete — the failure cleared, the rest of the
    scope unlisted since. A failing scope is re-read whole: still failing, the event kept."""
    await daemon.scan_once()
    proxy.deny_operations = {"ListKeys"}
    await daemon.scan_once()  # every scope fails; its last good state shows
    handled = await daemon.reaudit(messages(event("kms-PutKeyPolicy.json", estate.keys["shared"])))
    after, scopes, _ = latest(daemon)
    assert handled == set()  # kept for a retry
    assert not after["complete"] and len(scopes) == SCOPES and not any(ok for _, _, ok in scopes)
    proxy.deny_operations = set()
    handled = await daemon.reaudit(messages(event("kms-PutKeyPolicy.json", estate.keys["shared"])))
    assert handled == {"receipt-0"}
    _, scopes, _ = latest(daemon)
    assert (A, "us-east-1", True) in scopes  # read whole now: truly read
