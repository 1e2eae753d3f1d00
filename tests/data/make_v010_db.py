"""Builds tests/data/kmsaudit-0.1.0.db: a snapshot database as kmsaudit 0.1.0 (commit a2fe9df,
schema v2) wrote it, with key policies stored and hashed as KMS returned them (raw text).

Run with that release's code on the path: `git worktree add /tmp/v010 a2fe9df && PYTHONPATH=/tmp/v010
python tests/data/make_v010_db.py tests/data/kmsaudit-0.1.0.db`. tests/store/test_store_upgrade.py
upgrades a copy in place and scans the same estate, reordered as real KMS would return it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from v010_estate import result

from kmsaudit.store.database import Store  # the 0.1.0 store, from PYTHONPATH

path = Path(sys.argv[1])
for stale in path.parent.glob(path.name + "*"):
    stale.unlink()
store = Store(path)
store.save_scan(result(version=1), detected_at=1790000000.0)
store.save_scan(result(version=2), detected_at=1790000900.0)  # one key policy changed
store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
store.close()
print(path, path.stat().st_size, "bytes")
