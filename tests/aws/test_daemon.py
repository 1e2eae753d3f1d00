"""`kmsaudit daemon` against moto: scans, /readyz, /metrics scraped and parsed, SIGTERM exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import Estate, config_text
from prometheus_client.parser import text_string_to_metric_families


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_daemon_scans_serves_metrics_and_stops_on_sigterm(tmp_path: Path, estate: Estate, aws: str) -> None:
    port = _free_port()
    config = tmp_path / "k.toml"
    config.write_text(
        config_text(store=str(tmp_path / "k.db")).replace('interval = "15m"', 'interval = "2s"')
        + f'\n[daemon]\nlisten = "127.0.0.1:{port}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsaudit", "daemon", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": aws},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # the first scan; bounded wait, not a timing assertion
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert _get(f"{base}/readyz")[0] == 200
        assert _get(f"{base}/healthz") == (200, "ok\n")
        status, text = _get(f"{base}/metrics")
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("kmsaudit_findings", (("access", "public"), ("severity", "high"), ("zone", "external")))] == 1
        assert sum(v for (name, _), v in samples.items() if name == "kmsaudit_keys") == 6
        assert any(name == "kmsaudit_aws_requests_total" for name, _ in samples)
        assert any(name == "kmsaudit_scan_duration_seconds_count" and v >= 1 for (name, _), v in samples.items())
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "daemon.started" in events and "daemon.stopped" in events and "daemon.scan" in events
