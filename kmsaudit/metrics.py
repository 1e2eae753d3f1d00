"""Every Prometheus metric kmsaudit exports, defined once (SPEC §8).

Base units in names; no label ever carries a key or principal ARN (cardinality).
Each process keeps its own registry so tests and the daemon never share state.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

from kmsaudit.model import DriftEvent, ScanResult


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.scan_duration = Histogram(
            "kmsaudit_scan_duration_seconds",
            "Wall time of one scan, collection to snapshot.",
            registry=r,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 2400, 3600),
        )
        self.last_scan = Gauge(
            "kmsaudit_last_scan_timestamp_seconds",
            "When the scope was last scanned, successfully or not.",
            ["account", "region"],
            registry=r,
        )
        self.last_success = Gauge(
            "kmsaudit_last_successful_scan_timestamp_seconds",
            "When the scope was last read completely.",
            ["account", "region"],
            registry=r,
        )
        self.keys = Gauge("kmsaudit_keys", "KMS keys read in the last scan.", ["account", "region"], registry=r)
        self.findings = Gauge(
            "kmsaudit_findings", "Findings of the last scan.", ["access", "zone", "severity"], registry=r
        )
        self.drift_events = Counter("kmsaudit_drift_events", "Drift events detected.", ["kind", "severity"], registry=r)
        self.aws_requests = Counter(
            "kmsaudit_aws_requests",
            "AWS HTTP requests, retries included.",
            ["service", "operation", "outcome"],
            registry=r,
        )
        self.aws_throttled = Counter(
            "kmsaudit_aws_throttled",
            "AWS answers that asked kmsaudit to slow down.",
            ["service", "operation"],
            registry=r,
        )
        self.scope_failures = Counter(
            "kmsaudit_scope_failures", "Scopes whose collection failed.", ["account", "region", "error"], registry=r
        )

    def observe_request(self, service: str, operation: str, outcome: str) -> None:
        """The collector's RequestObserver: one call per HTTP attempt."""
        self.aws_requests.labels(service, operation, outcome).inc()
        if outcome == "throttled":
            self.aws_throttled.labels(service, operation).inc()

    def observe_scan(self, result: ScanResult, events: Iterable[DriftEvent] = ()) -> None:
        self.scan_duration.observe(max(0.0, result.finished_at - result.started_at))
        for scope in result.scopes:
            self.last_scan.labels(scope.account, scope.region).set(result.finished_at)
            if scope.ok:
                self.last_success.labels(scope.account, scope.region).set(result.finished_at)
                self.keys.labels(scope.account, scope.region).set(scope.keys)
            else:
                self.scope_failures.labels(scope.account, scope.region, scope.error_code or "error").inc()
        for account in result.iam_failures:
            self.scope_failures.labels(account, "global", "iam").inc()
        self.findings.clear()
        counts = collections.Counter((f.access, f.zone, f.severity) for f in result.findings)
        for (access, zone, severity), n in counts.items():
            self.findings.labels(access, zone, severity).set(n)
        for event in events:
            self.drift_events.labels(event.kind, event.severity).inc()

    def write_textfile(self, path: str | Path) -> None:
        """Atomic (temporary file + rename), for node_exporter's textfile collector."""
        write_to_textfile(str(path), self.registry)
