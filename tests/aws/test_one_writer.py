"""Issue #19.8: scans that overlap (cron beside the daemon, a manual run) could commit out of
order and flip drift (removed, then added). One writer at a time, with a clear message."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from awsproxy import AwsProxy
from estate import Estate, config_text
from loopback import wait_for


def _held(lock: Path) -> bool:
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_a_second_scan_on_the_same_database_is_refused_while_one_runs(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    proxy = AwsProxy(aws, latency=0.3)  # a slow scan, as a large estate's is
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.start()}
    argv = [sys.executable, "-m", "kmsaudit", "scan", "--config", str(config), "--format", "json"]
    try:
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        wait_for(lambda: _held(tmp_path / "k.db.lock"), what="the first scan to hold the store")
        second = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        _, err = first.communicate(timeout=180)
    finally:
        proxy.stop()
    assert second.returncode == 2, second.stderr
    line = [text for text in second.stderr.splitlines() if "kmsaudit: error" in text]
    assert line and "another kmsaudit" in line[0] and str(first.pid) in line[0], second.stderr
    assert first.returncode == 0, err
    assert not _held(tmp_path / "k.db.lock")  # released at the end
