"""Issue #14: where real AWS is harder than moto (DESIGN.md), through tests/awsproxy.py.

KMS returns each key policy in a new order and layout on every call, and pages its lists; one
key may keep failing while its neighbours answer. Neither may make drift cry wolf or go blind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from awsproxy import AwsProxy
from estate import A, B, Estate, config_text, role

from kmsaudit.store.database import Store


def scan(config: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsaudit", "scan", "--config", str(config), "--format", "json", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "AWS_ENDPOINT_URL": endpoint},
    )


def counts(db: Path) -> tuple[int, int, int, int]:
    store = Store(db, create=False)
    try:
        return tuple(  # type: ignore[return-value]
            store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("drift", "states", "policies", "policy_versions")
        )
    finally:
        store.close()


def test_a_reordered_unchanged_estate_is_no_drift_and_no_new_state(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    proxy = AwsProxy(aws, reorder_policies=True, page_size=2)
    url = proxy.start()
    try:
        first = scan(config, url)
        assert first.returncode == 0, first.stderr
        before = counts(tmp_path / "k.db")
        for _ in range(2):
            again = scan(config, url)
            assert again.returncode == 0, again.stderr
            assert json.loads(again.stdout) == json.loads(first.stdout)  # the same findings, in the same words
    finally:
        proxy.stop()
    drift, states, policies, versions = counts(tmp_path / "k.db")
    assert drift == 0  # not one policy-changed event
    assert (states, policies, versions) == before[1:] and before[0] == 0  # nothing new stored
    history = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "history", estate.keys["shared"], "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert history.returncode == 0 and history.stdout.count("== snapshot") == 1  # one version, no diff


def test_a_real_change_through_the_reordering_proxy_is_still_drift(tmp_path: Path, estate: Estate, aws: str) -> None:
    from kmsaudit.demo.emulator import client

    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    proxy = AwsProxy(aws, reorder_policies=True, page_size=2)
    url = proxy.start()
    try:
        assert scan(config, url).returncode == 0
        kms = client("kms", A, "eu-west-1")
        doc = json.loads(kms.get_key_policy(KeyId=estate.ids["narrowed"], PolicyName="default")["Policy"])
        doc["Statement"][-1]["Action"] = ["kms:Decrypt", "kms:DescribeKey"]  # widened for role(B, "Reader")
        kms.put_key_policy(KeyId=estate.ids["narrowed"], PolicyName="default", Policy=json.dumps(doc))
        assert scan(config, url).returncode == 0
    finally:
        proxy.stop()
    store = Store(tmp_path / "k.db", create=False)
    try:
        events = [(e["kind"], e["principal"]) for e in store.drift()]
    finally:
        store.close()
    assert ("widened", role(B, "Reader")) in events


def test_one_key_that_keeps_failing_does_not_blind_its_region(tmp_path: Path, estate: Estate, aws: str) -> None:
    """SPEC §5, issue #14: a key whose reads answer 500 after every retry is recorded unreadable,
    keeps its last good findings, gives one key-unreadable event (not one per scan) and
    key-readable when it recovers; the other keys of its region are still audited."""
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db"), extra="max_attempts = 2"))
    bad, neighbour = estate.ids["shared"], estate.keys["granted"]  # both in A/us-east-1
    first = scan(config, aws)
    assert first.returncode == 0
    baseline = {f["id"] for f in json.loads(first.stdout)}
    assert any(f["key_arn"] == estate.keys["shared"] for f in json.loads(first.stdout))

    proxy = AwsProxy(aws, fail_keys={bad})
    url = proxy.start()
    try:
        runs = [scan(config, url) for _ in range(2)]
    finally:
        proxy.stop()
    for run in runs:
        assert run.returncode == 0, run.stderr  # the scope is not failed for one key
        assert f"key {estate.keys['shared']} could not be read" in run.stderr
        assert any(f["key_arn"] == neighbour for f in json.loads(run.stdout))  # its neighbours audited
    recovered = scan(config, aws)
    assert recovered.returncode == 0

    store = Store(tmp_path / "k.db", create=False)
    try:
        events = [(e["kind"], e["key_arn"]) for e in store.drift()]
        kept = {f["id"] for f in store.findings(2)}
        now = {f["id"] for f in store.findings()}
    finally:
        store.close()
    shared = estate.keys["shared"]
    assert events == [("key-unreadable", shared), ("key-readable", shared)]
    assert baseline <= kept  # while unreadable, its findings were still reported
    assert now == baseline


def test_worker_processes_read_real_kms_as_one_process_does(tmp_path: Path, estate: Estate, aws: str) -> None:
    """Issue #18 with DESIGN.md's real-AWS habits: `kmsaudit scan` on 2 processes, through pages of
    two and policies reordered on every call, reports what one process reports, and a second
    scan on 2 processes is no drift (the policies it stores are canonical, as one process's)."""
    one_config, two_config = tmp_path / "one.toml", tmp_path / "two.toml"
    one_config.write_text(config_text(store=str(tmp_path / "one.db")))
    two_config.write_text(config_text(store=str(tmp_path / "two.db"), extra="processes = 2"))
    proxy = AwsProxy(aws, reorder_policies=True, page_size=2)
    url = proxy.start()
    try:
        one = scan(one_config, url)
        first = scan(two_config, url)
        again = scan(two_config, url)
    finally:
        proxy.stop()
    assert one.returncode == first.returncode == again.returncode == 0, (one.stderr, first.stderr)
    assert json.loads(first.stdout) == json.loads(one.stdout)
    assert json.loads(again.stdout) == json.loads(one.stdout)
    assert counts(tmp_path / "two.db")[0] == 0  # no drift event
    # each scope's log line says which worker process read it
    workers = {json.loads(line).get("worker") for line in first.stderr.splitlines() if '"scope.done"' in line}
    assert workers and workers <= {0, 1} and None not in workers
    assert counts(tmp_path / "two.db")[1:] == counts(tmp_path / "one.db")[1:]  # the same states and policies
