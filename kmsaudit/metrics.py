"""Every Prometheus metric kmsaudit exports, defined once (SPEC §8).

Base units in names; no label ever carries a key or principal ARN (cardinality). Each process
keeps its own registry so tests and the daemon never share state.

What the metrics say comes from the snapshot database, never from one scan alone (issue #13):
- gauges describe the latest snapshot as `kmsaudit findings` does: a scope that failed keeps
  its last good state (with `kmsaudit_scope_up` 0 and its old
  `kmsaudit_last_successful_scan_timestamp_seconds`), so no alert resolves because data is
  missing, and scopes no longer configured disappear;
- counters are cumulative in the database (`counters` table), so a cron scan's textfile, a
  Pushgateway push and the daemon all export values that only grow, and `increase()` sees the
  first drift event; every drift kind × severity is exported from zero.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from kmsaudit.files import Destination, write_file
from kmsaudit.model import DRIFT_KINDS, SEVERITIES, DriftEvent, ScanResult

if TYPE_CHECKING:
    from kmsaudit.store.database import CounterIncrements, Store

# The label values of kmsaudit_events_total besides the event names (README "Real-time detection")
EVENT_SOURCES = frozenset({"kms", "iam", "organizations", "sqs", "unknown", "other"})
EVENT_OUTCOMES = frozenset(
    {
        "reaudited",
        "full-scan",
        "covered",
        "failed",
        "unknown-scope",
        "unresolved",
        "failed-call",
        "unaudited",
        "ignored",
        "duplicate",
        "malformed",
        "receive-error",
    }
)
SCAN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 2400, 3600)
Labels = tuple[tuple[str, str], ...]
Totals = dict[tuple[str, Labels], float]


def scan_counters(result: ScanResult, events: Iterable[DriftEvent]) -> CounterIncrements:
    """What one scan adds to the cumulative counters (written with its snapshot)."""
    out: list[tuple[str, Labels, float]] = []
    for event in events:
        out.append(("drift_events", (("kind", event.kind), ("severity", event.severity)), 1))
    for scope in result.failed_scopes:
        out.append(
            ("scope_failures", (("account", scope.account), ("region", scope.region), ("error", scope.error_code)), 1)
        )
    for account in result.iam_failures:
        out.append(("scope_failures", (("account", account), ("region", "global"), ("error", "iam")), 1))
    for (service, operation, outcome), n in result.attempts:
        out.append(("aws_requests", (("service", service), ("operation", operation), ("outcome", outcome)), n))
        if outcome == "throttled":
            out.append(("aws_throttled", (("service", service), ("operation", operation)), n))
    seconds = max(0.0, result.finished_at - result.started_at)
    out.append(("scan_duration_count", (), 1))
    out.append(("scan_duration_sum", (), seconds))
    for bound in SCAN_DURATION_BUCKETS:
        if seconds <= bound:
            out.append(("scan_duration_bucket", (("le", str(float(bound))),), 1))
    out.append(("scan_duration_bucket", (("le", "+Inf"),), 1))
    return out


class _Cumulative(Collector):
    """The counters and the scan-duration histogram, from the database's running totals."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        totals = self.metrics.totals
        drift = CounterMetricFamily("kmsaudit_drift_events", "Drift events detected.", labels=["kind", "severity"])
        for kind in DRIFT_KINDS:
            for severity in SEVERITIES:
                drift.add_metric(
                    [kind, severity], totals.get(("drift_events", (("kind", kind), ("severity", severity))), 0)
                )
        yield drift
        for name, doc, labels in (
            ("scope_failures", "Scopes whose collection failed.", ["account", "region", "error"]),
            ("aws_requests", "AWS HTTP requests, retries included.", ["service", "operation", "outcome"]),
            ("aws_throttled", "AWS answers that asked kmsaudit to slow down.", ["service", "operation"]),
        ):
            family = CounterMetricFamily(f"kmsaudit_{name}", doc, labels=labels)
            for (metric, label_pairs), value in sorted(totals.items()):
                if metric == name:
                    family.add_metric([v for _, v in label_pairs], value)
            yield family
        buckets = [
            (str(float(bound)), totals.get(("scan_duration_bucket", (("le", str(float(bound))),)), 0))
            for bound in SCAN_DURATION_BUCKETS
        ]
        buckets.append(("+Inf", totals.get(("scan_duration_bucket", (("le", "+Inf"),)), 0)))
        yield HistogramMetricFamily(
            "kmsaudit_scan_duration_seconds",
            "Wall time of one scan, collection to snapshot.",
            buckets=buckets,
            sum_value=totals.get(("scan_duration_sum", ()), 0),
        )


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, event_names: Iterable[str] = ()) -> None:
        """`event_names`: the event names that are label values of `kmsaudit_events_total` (the
        ones the daemon knows); any other is `other`."""
        self.registry = registry or CollectorRegistry()
        self.event_names = frozenset(event_names) | {"ReceiveMessage", "other", "unknown"}
        self.totals: Totals = {}
        r = self.registry
        self.last_scan = Gauge(
            "kmsaudit_last_scan_timestamp_seconds",
            "When the scope was last scanned, successfully or not.",
            ["account", "region"],
            registry=r,
        )
        self.last_success = Gauge(
            "kmsaudit_last_successful_scan_timestamp_seconds",
            "When the scope was last read completely: the age of the state the other metrics show.",
            ["account", "region"],
            registry=r,
        )
        self.scope_up = Gauge(
            "kmsaudit_scope_up",
            "1 if the scope was read completely in the latest scan, 0 if its last good state is shown.",
            ["account", "region"],
            registry=r,
        )
        self.keys = Gauge(
            "kmsaudit_keys", "KMS keys in the scope's last good state.", ["account", "region"], registry=r
        )
        self.keys_unreadable = Gauge(
            "kmsaudit_keys_unreadable",
            "Keys whose reads failed after every retry: their last good state is shown.",
            ["account", "region"],
            registry=r,
        )
        self.findings = Gauge(
            "kmsaudit_findings",
            "Findings of the latest snapshot (a failed scope's last good state included); accepted: known-good.",
            ["access", "zone", "severity", "accepted"],
            registry=r,
        )
        # Real-time detection (README): this process's events, by source, name and outcome.
        self.events = Counter(
            "kmsaudit_events",
            "CloudTrail events read from the queues, by source, event name and outcome.",
            ["source", "event", "outcome"],
            registry=r,
        )
        self.event_to_alert = Histogram(
            "kmsaudit_event_to_alert_seconds",
            "From the CloudTrail eventTime to its drift recorded and its alerts enqueued.",
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
            registry=r,
        )
        self.events_last_received = Gauge(
            "kmsaudit_events_last_received_timestamp_seconds",
            "When a message was last read from the queue (the consumer's start until then).",
            ["queue"],
            registry=r,
        )
        self.task_restarts = Counter(
            "kmsaudit_task_restarts",
            "Long-lived daemon tasks (scheduler, queue consumers) restarted after a crash.",
            ["task"],
            registry=r,
        )
        self.task_up = Gauge(
            "kmsaudit_task_up", "1 while the daemon's long-lived task runs, 0 while it is down.", ["task"], registry=r
        )
        r.register(_Cumulative(self))

    def count_event(self, source: str, event: str, outcome: str) -> None:
        """One event's outcome. Every label value is from a fixed set (issue #24, defect 8): a
        source, name or outcome not known here is counted as `other`, never as itself."""
        self.events.labels(
            source if source in EVENT_SOURCES else "other",
            event if event in self.event_names else "other",
            outcome if outcome in EVENT_OUTCOMES else "other",
        ).inc()

    def event_received(self, queue_url: str) -> None:
        self.events_last_received.labels(queue_url.rstrip("/").rsplit("/", 1)[-1]).set_to_current_time()

    def update(self, store: Store, snapshot_id: int | None = None) -> None:
        """Everything from the database: the latest (or given) snapshot and the running totals."""
        self.totals = store.counter_totals()
        view = store.scope_view(snapshot_id)
        snapshot = store.snapshot(snapshot_id)
        gauges = (self.last_scan, self.last_success, self.scope_up, self.keys, self.keys_unreadable, self.findings)
        for gauge in gauges:
            gauge.clear()  # scopes no longer configured go away (issue #19)
        counts: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        for scope in view:
            where = (scope.account, scope.region)
            attempted = scope.last_attempt_at
            if attempted is None and snapshot is not None:
                attempted = snapshot["finished_at"]
            if attempted is not None:
                self.last_scan.labels(*where).set(attempted)
            self.scope_up.labels(*where).set(1 if scope.ok else 0)
            if scope.last_good_at is not None:
                self.last_success.labels(*where).set(scope.last_good_at)
            if scope.state is not None:
                self.keys.labels(*where).set(len(scope.state.keys))
                self.keys_unreadable.labels(*where).set(len(scope.state.unreadable))
                counts.update(
                    (f["access"], f["zone"], f["severity"], "true" if f.get("accepted") else "false")
                    for f in scope.state.findings.values()
                )
        for labels, n in counts.items():
            self.findings.labels(*labels).set(n)

    def write_textfile(self, destination: Destination, mode: int = 0o644) -> None:
        """Atomic (kmsaudit/files.py: a temporary file renamed over it, a symbolic link written
        through), for node_exporter's textfile collector, with an explicit mode: node_exporter runs
        as another user, and kmsaudit's umask (0077 under the shipped units, for the database)
        would make the file unreadable to it (issue #19)."""
        write_file(destination, generate_latest(self.registry), mode)
