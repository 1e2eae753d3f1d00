"""SPEC §8 metrics from a cron scan: written atomically to a textfile and parsed back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from estate import Estate, config_text
from prometheus_client.parser import text_string_to_metric_families


def test_scan_writes_the_spec_metrics_to_a_textfile(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    textfile = tmp_path / "kmsaudit.prom"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kmsaudit",
            "scan",
            "--config",
            str(config),
            "--format",
            "json",
            "--metrics-textfile",
            str(textfile),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ENDPOINT_URL": aws},
    )
    assert proc.returncode == 0, proc.stderr
    samples = {}
    for family in text_string_to_metric_families(textfile.read_text()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
            assert not any(str(v).startswith("arn:") for v in s.labels.values())  # no ARN in any label
    for name in (
        "kmsaudit_scan_duration_seconds_count",
        "kmsaudit_last_scan_timestamp_seconds",
        "kmsaudit_last_successful_scan_timestamp_seconds",
        "kmsaudit_keys",
        "kmsaudit_findings",
        "kmsaudit_aws_requests_total",
    ):
        assert name in samples, name
    assert sum(v for _, v in samples["kmsaudit_keys"]) == 6
    public = [
        v
        for labels, v in samples["kmsaudit_findings"]
        if labels == {"access": "public", "zone": "external", "severity": "high", "accepted": "false"}
    ]
    assert public == [1.0]
    effective = sum(v for labels, v in samples["kmsaudit_findings"] if labels["access"] == "effective")
    assert effective == 7  # the estate's effective findings (tests/aws/test_collect.py)
    ops = {labels["operation"] for labels, _ in samples["kmsaudit_aws_requests_total"]}
    assert {"ListKeys", "GetKeyPolicy", "ListGrants", "GetAccountAuthorizationDetails", "AssumeRole"} <= ops
    assert not list(tmp_path.glob("kmsaudit.prom.*"))  # the temporary file was renamed, not left behind


def test_the_textfile_is_readable_by_node_exporter_under_a_strict_umask(
    tmp_path: Path, estate: Estate, aws: str
) -> None:
    """Issue #19.3: under the shipped unit's UMask=0077 the .prom file was 0600, owned by kmsaudit:
    node_exporter could not read it and every series was silently absent."""
    import stat

    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    textfile = tmp_path / "kmsaudit.prom"
    proc = subprocess.run(
        [
            "sh",
            "-c",
            'umask 077 && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "kmsaudit",
            "scan",
            "--config",
            str(config),
            "--metrics-textfile",
            str(textfile),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ENDPOINT_URL": aws},
    )
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "k.db").stat().st_mode) == 0o600  # the database stays private


def test_a_textfile_in_a_missing_folder_is_refused_before_the_scan(tmp_path: Path, estate: Estate, aws: str) -> None:
    """Issue #25 item 5: the scan ran and stored its snapshot, then exited 2 with no hint."""
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))
    textfile = tmp_path / "textfile_collector" / "kmsaudit.prom"
    proc = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "scan", "--config", str(config), "--metrics-textfile", str(textfile)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ENDPOINT_URL": aws},
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"kmsaudit: error: --metrics-textfile {textfile}: no folder {textfile.parent} "
        "(create it first, or fix the path)\n"
    )
    assert not (tmp_path / "k.db").exists()  # nothing was scanned or stored


def test_the_textfile_and_the_pushgateway_fail_alike(tmp_path: Path, capsys: object) -> None:
    """Issue #25 item 5: a textfile that could not be written exited 2, a dead Pushgateway 0."""
    import socket

    from kmsaudit.cli.main import _export_metrics
    from kmsaudit.files import check_destination
    from kmsaudit.metrics import Metrics

    folder = tmp_path / "gone"
    folder.mkdir()
    destination = check_destination(folder / "kmsaudit.prom", "--metrics-textfile")
    folder.rmdir()  # removed between the check and the write
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert _export_metrics(Metrics(), destination, 0o644, None) == 1
    assert _export_metrics(Metrics(), None, 0o644, dead) == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("kmsaudit: error: metrics not exported: ") for line in lines)
    assert "--metrics-textfile" in lines[0] and "--pushgateway http://127.0.0.1:" in lines[1]
