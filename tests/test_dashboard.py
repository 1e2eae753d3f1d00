"""Issue #25 item 7: every Grafana panel keeps its data when a counter has no series. The panel
"Throttling and scope failures" was empty exactly when scopes failed (`a + b` is empty while the
throttle counter has no series). Each panel's expression is evaluated by promtool against the
scrape of a daemon whose scopes fail (from its very first scan, and after a good one)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from synthetic import scan

from kmsaudit.metrics import Metrics, scan_counters
from kmsaudit.store.database import Store

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "kmsaudit-dashboard.json"
MINUTES = 40


def panels() -> list[tuple[str, str]]:
    data = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in data["panels"] for t in p.get("targets", [])]


def _scrape(tmp_path: Path, scans: list[bool]) -> str:
    store = Store(tmp_path / "k.db")
    now = time.time()
    for i, ok in enumerate(scans):
        store.save_scan(scan(3, ok=ok, finished_at=now - 600 * (len(scans) - i)), count=scan_counters)
    metrics = Metrics()
    metrics.update(store)
    store.close()
    return generate_latest(metrics.registry).decode()


def _series(text: str) -> list[dict[str, str]]:
    """The scrape as promtool input series: counters grow by one a minute, gauges stay."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created") or math.isnan(sample.value):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            growing = family.type in ("counter", "histogram")
            values = f"{sample.value}+1x{MINUTES}" if growing else f"{sample.value}x{MINUTES}"
            out.append({"series": f"{sample.name}{{{labels}}}", "values": values})
    return out


def _no_data(series: list[dict[str, str]], tmp_path: Path) -> list[str]:
    """The panels whose expression gives no sample at the end of the series (promtool: absent(…))."""
    empty = []
    for title, expr in panels():
        tests: dict[str, Any] = {
            "rule_files": [],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": series,
                    "promql_expr_test": [
                        {"expr": f"absent({expr})", "eval_time": f"{MINUTES - 5}m", "exp_samples": []}
                    ],
                }
            ],
        }
        path = tmp_path / "panel.yml"
        path.write_text(yaml.safe_dump(tests))
        done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            assert "absent" in done.stdout + done.stderr, done.stdout + done.stderr  # a failed check, not a bad file
            empty.append(title)
    return empty


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
@pytest.mark.parametrize("scans", [[False, False], [True, False]], ids=["failing-from-the-start", "failing-after-one"])
def test_every_panel_keeps_data_while_scopes_fail(tmp_path: Path, scans: list[bool]) -> None:
    text = _scrape(tmp_path, scans)
    assert "kmsaudit_scope_failures_total{" in text and "kmsaudit_aws_throttled_total{" not in text
    empty = _no_data(_series(text), tmp_path)
    assert not empty, empty


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_the_fallback_adds_no_series_when_the_counters_have_some(tmp_path: Path) -> None:
    """`or on() vector(0)` stands in only for an empty side: with both counters, their sum alone."""
    (expr,) = [e for title, e in panels() if title == "Throttling and scope failures"]
    series = [
        {"series": 'kmsaudit_aws_throttled_total{service="kms",operation="ListGrants"}', "values": "0+60x40"},
        {"series": 'kmsaudit_scope_failures_total{account="1",region="r",error="x"}', "values": "0+120x40"},
    ]
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [{"expr": expr, "eval_time": "30m", "exp_samples": [{"labels": "{}", "value": 3}]}],
            }
        ],
    }
    path = tmp_path / "sum.yml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
