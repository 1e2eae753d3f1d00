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

from kmsaudit.store import Store


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
    from kmsaudit.emulator import client

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
