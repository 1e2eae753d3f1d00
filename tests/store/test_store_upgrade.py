"""Issue #14: a database written by kmsaudit 0.1.0 (raw key-policy texts and hashes; fixture built
by tests/data/make_v010_db.py with that release's code) is upgraded in place, and the first scan
after the upgrade reports no drift for the unchanged policies KMS returns in a new order."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from kmsaudit.store.database import SCHEMA_VERSION, Store

DATA = Path(__file__).resolve().parents[1] / "data"
sys.path.insert(0, str(DATA))
from awsproxy import kms_order  # noqa: E402  (tests/awsproxy.py: what KMS does to a policy)
from v010_estate import keys, result  # noqa: E402


def test_a_0_1_0_database_is_upgraded_and_reordered_policies_are_no_drift(tmp_path: Path) -> None:
    path = tmp_path / "kmsaudit.db"
    shutil.copy(DATA / "kmsaudit-0.1.0.db", path)
    store = Store(path)
    try:
        assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION
        )
        assert store.integrity() == "ok"
        before = {
            t: store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("policies", "policy_versions")
        }
        for seed in (1, 2):
            _, events = store.save_scan(result(version=2, text=kms_order(seed)))
            assert events == [], [(e.kind, e.key_arn) for e in events]
        after = {
            t: store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("policies", "policy_versions")
        }
        assert after == before  # no new policy version for a reordering
        versions = store.history(keys(2)[0].arn)
        assert len(versions) == 2  # 0.1.0's two versions, kept
        # The versions are canonical now: their difference is the statement that was added.
        old, new = (json.loads(v["text"]) for v in versions)
        added = [s for s in new["Statement"] if s not in old["Statement"]]
        assert [s["Sid"] for s in added] == ["New"] and len(new["Statement"]) == len(old["Statement"]) + 1
        # A real change after the upgrade is still drift.
        _, events = store.save_scan(result(version=1, text=kms_order(3)))
        assert ("removed", "arn:aws:iam::555566667777:root") in [(e.kind, e.principal) for e in events]
    finally:
        store.close()
