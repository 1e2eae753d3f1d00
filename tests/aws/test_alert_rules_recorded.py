"""The shipped Prometheus rules over series recorded from real scans (issue #13).

Four scans of the moto estate — healthy, AWS unreachable, recovered, a new external account
trusted by a key — each scraped, the scrape held for ten minutes as Prometheus would keep
seeing it; then `promtool test rules` checks that `KmsAuditPublicKey` fires all along (the key
stays public, whatever the scan could read) and that `KmsAuditExternalAccessAdded` fires on the
first `added` event. Once with the daemon's code (one process, one registry) and once as cron
runs it (a new process per scan writing a textfile).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from estate import Estate, config_text
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_scan_cli import scan

from kmsaudit.config.settings import load_config
from kmsaudit.demo.emulator import client
from kmsaudit.run.daemon import Daemon

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "kmsaudit-rules.yml"
DOWN = "http://127.0.0.1:9"
MINUTES_PER_SCAN = 10
WATCHED = ("kmsaudit_findings", "kmsaudit_drift_events_total")

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is missing")

Scrape = dict[str, float]  # series ('name{labels}') -> value


# AWS unreachable: botocore would retry ten times with backoff (~75 s a scan); two attempts
# show the same behaviour.
FEW_RETRIES = "max_attempts = 2"


def parse(text: str) -> Scrape:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in WATCHED:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


def trust_a_new_account(estate: Estate) -> None:
    kms = client("kms", "111111111111", "eu-west-1")
    doc = json.loads(kms.get_key_policy(KeyId=estate.ids["narrowed"], PolicyName="default")["Policy"])
    doc["Statement"].append(
        {
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::999988887777:root"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        }
    )
    kms.put_key_policy(KeyId=estate.ids["narrowed"], PolicyName="default", Policy=json.dumps(doc))


def record(estate: Estate, aws: str, scan_and_scrape: Callable[[str], Scrape]) -> list[Scrape]:
    scrapes = [scan_and_scrape(aws), scan_and_scrape(DOWN), scan_and_scrape(aws)]
    trust_a_new_account(estate)
    scrapes.append(scan_and_scrape(aws))
    return scrapes


def promtool(tmp_path: Path, scrapes: list[Scrape]) -> subprocess.CompletedProcess[str]:
    series = sorted(set().union(*scrapes))
    input_series = [
        {
            "series": name,
            "values": " ".join(
                (str(scrape[name]) if name in scrape else "_") for scrape in scrapes for _ in range(MINUTES_PER_SCAN)
            ),
        }
        for name in series
    ]
    public = [
        sum(v for k, v in scrape.items() if k.startswith("kmsaudit_findings{") and 'access="public"' in k)
        for scrape in scrapes
    ]
    tests = []
    for minute in range(1, len(scrapes) * MINUTES_PER_SCAN, 3):
        value = public[minute // MINUTES_PER_SCAN]
        tests.append(
            {
                "eval_time": f"{minute}m",
                "alertname": "KmsAuditPublicKey",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "critical"},
                        "exp_annotations": {
                            "summary": f"{value:g} KMS key findings are public (kmsaudit findings --format json)"
                        },
                    }
                ],
            }
        )
    added = {
        "exp_labels": {"kind": "added", "severity": "critical"},
        "exp_annotations": {"summary": "External access to a KMS key was added (kmsaudit drift --since 1h)"},
    }
    last = (len(scrapes) - 1) * MINUTES_PER_SCAN
    for minute, expected in ((last - 5, []), (last, [added]), (last + 5, [added])):
        tests.append({"eval_time": f"{minute}m", "alertname": "KmsAuditExternalAccessAdded", "exp_alerts": expected})
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": tests}],
    }
    path = tmp_path / "recorded-test.yml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


def test_rules_over_a_daemons_recorded_scrapes(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.toml"
    path.write_text(config_text(store=str(tmp_path / "k.db"), extra=FEW_RETRIES))
    daemon = Daemon(path, load_config(path))

    def scan_and_scrape(endpoint: str) -> Scrape:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        asyncio.run(daemon.scan_once())
        return parse(generate_latest(daemon.metrics.registry).decode())

    result = promtool(tmp_path, record(estate, aws, scan_and_scrape))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_over_cron_textfiles(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db"), extra=FEW_RETRIES))
    textfile = tmp_path / "kmsaudit.prom"

    def scan_and_scrape(endpoint: str) -> Scrape:
        scan(config, "--metrics-textfile", str(textfile), endpoint=endpoint)
        return parse(textfile.read_text())

    result = promtool(tmp_path, record(estate, aws, scan_and_scrape))
    assert result.returncode == 0, result.stdout + result.stderr
