"""`kmsaudit daemon` against moto: scans, /readyz, /metrics scraped and parsed (and linted by
promtool), a real Prometheus server scraping it, SIGTERM exits 0 (issue #5)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from estate import Estate, config_text
from loopback import free_port, get_until, http_get, wait_for
from prometheus_client.parser import text_string_to_metric_families


def _start_daemon(tmp_path: Path, aws: str, extra: str = "") -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    config = tmp_path / "k.toml"
    config.write_text(
        config_text(store=str(tmp_path / "k.db")).replace('interval = "15m"', 'interval = "2s"')
        + f'\n[daemon]\nlisten = "127.0.0.1:{port}"\n'
        + extra
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsaudit", "daemon", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": aws},
    )
    return proc, f"http://127.0.0.1:{port}"


def test_daemon_scans_serves_metrics_and_stops_on_sigterm(tmp_path: Path, estate: Estate, aws: str) -> None:
    proc, base = _start_daemon(tmp_path, aws)
    try:
        assert get_until(f"{base}/readyz", lambda s, _: s == 200)[0] == 200  # after the first scan
        assert http_get(f"{base}/healthz") == (200, "ok\n")
        status, text = http_get(f"{base}/metrics")
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        public = (("accepted", "false"), ("access", "public"), ("severity", "high"), ("zone", "external"))
        assert samples[("kmsaudit_findings", public)] == 1
        assert sum(v for (name, _), v in samples.items() if name == "kmsaudit_keys") == 6
        assert any(name == "kmsaudit_aws_requests_total" for name, _ in samples)
        assert any(name == "kmsaudit_scan_duration_seconds_count" and v >= 1 for (name, _), v in samples.items())
        if shutil.which("promtool"):
            lint = subprocess.run(
                ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
            )
            assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "daemon.started" in events and "daemon.stopped" in events and "daemon.scan" in events


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_a_real_prometheus_scrapes_the_daemon(tmp_path: Path, estate: Estate, aws: str) -> None:
    proc, base = _start_daemon(tmp_path, aws)
    prom_port = free_port()
    target = base.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs: [{{job_name: kmsaudit, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = f"http://127.0.0.1:{prom_port}/api/v1/query?query=kmsaudit_findings"
        _, body = get_until(query, lambda s, b: s == 200 and '"result":[{' in b.replace(" ", ""))
        result = json.loads(body)["data"]["result"]
        assert {r["metric"]["access"] for r in result} >= {"public", "potential", "effective"}
        assert all(r["metric"]["job"] == "kmsaudit" for r in result)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_sighup_reloads_at_once_rebinds_and_keeps_the_old_config_when_the_new_one_is_bad(
    tmp_path: Path, estate: Estate, aws: str
) -> None:
    """Issue #13.8: SIGHUP was applied only at the next scheduled scan (up to the whole interval
    later) and a changed `daemon.listen` was never rebound."""
    old_port, new_port = free_port(), free_port()
    config = tmp_path / "k.toml"
    base = config_text(store=str(tmp_path / "k.db")).replace('interval = "15m"', 'interval = "1h"')
    config.write_text(base + f'\n[daemon]\nlisten = "127.0.0.1:{old_port}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsaudit", "daemon", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": aws},
    )
    try:
        assert get_until(f"http://127.0.0.1:{old_port}/readyz", lambda s, _: s == 200)[0] == 200
        config.write_text(base + f'\n[daemon]\nlisten = "127.0.0.1:{new_port}"\n')
        proc.send_signal(signal.SIGHUP)
        # Long before the next scan (an hour away): the new address answers, the old one is gone.
        assert get_until(f"http://127.0.0.1:{new_port}/healthz", lambda s, _: s == 200)[0] == 200
        wait_for(lambda: _refused(old_port), what="the old listener to close")
        config.write_text(base + "\n[daemon]\nlisten = 'not an address'\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "daemon.reload_failed" in _drain(proc), what="the bad config to be refused")
        assert http_get(f"http://127.0.0.1:{new_port}/healthz")[0] == 200  # still up, on the old config
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


_seen: dict[int, str] = {}


def _drain(proc: subprocess.Popen[str]) -> str:
    """What the daemon logged so far (stderr read without blocking)."""
    import fcntl

    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        chunk = os.read(fd, 1 << 20).decode(errors="replace")
    except BlockingIOError:
        chunk = ""
    _seen[proc.pid] = _seen.get(proc.pid, "") + chunk
    return _seen[proc.pid]


def _refused(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_readyz_is_ready_although_one_scope_fails(tmp_path: Path, estate: Estate, aws: str) -> None:
    """Issue #19.11: /readyz answered 503 whenever any one scope failed (one region not enabled:
    the pod was never Ready). Failed scopes are in the metrics and alerts; readiness is about
    having a snapshot to serve."""
    from awsproxy import AwsProxy

    proxy = AwsProxy(aws, deny_assume={"333333333333"})
    url = proxy.start()
    try:
        proc, base = _start_daemon(tmp_path, url)
        try:
            status, _ = get_until(f"{base}/readyz", lambda s, _: s == 200, attempts=150)
            assert status == 200
            _, metrics = http_get(f"{base}/metrics")
            assert 'kmsaudit_scope_up{account="333333333333",region="us-east-1"} 0.0' in metrics
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    finally:
        proxy.stop()


def test_a_changed_acceptance_file_is_taken_up_by_the_next_scan_without_a_signal(
    tmp_path: Path, estate: Estate, aws: str
) -> None:
    """Issue #15: entries are reviewed like code and applied by a deploy (a ConfigMap update
    swaps the file in); the daemon takes them up before its next scan, no SIGHUP, no restart."""
    proc, base = _start_daemon(tmp_path, aws, '\n[acceptance]\nfiles = ["accepted.toml"]\n')
    accepted_public = 'kmsaudit_findings{accepted="true",access="public",severity="high",zone="external"} 1.0'
    try:
        _, metrics = get_until(f"{base}/metrics", lambda s, body: "kmsaudit_findings{" in body)
        assert accepted_public not in metrics
        (tmp_path / "accepted.toml").write_text(
            '[[accept]]\nid = "public-by-design"\nkeys = ["arn:aws:kms:*"]\nprincipals = ["*"]\n'
            'actions = ["kms:*"]\naccess = ["public"]\nallow_public = true\nreason = "test"\n'
            'owner = "test"\nexpires = 2099-01-01\n'.replace("2099-01-01", _in_a_month())
        )
        _, metrics = get_until(f"{base}/metrics", lambda s, body: accepted_public in body)
        assert accepted_public in metrics
        assert "files changed" in _drain(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def _in_a_month() -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
