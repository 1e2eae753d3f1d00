"""The figures of the events soak (bench/soak_events.py), printed once at its end. Not a test."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from events import percentile
from soak_parts import total

ANCHOR = 300.0  # seconds: RSS, fds and threads "at 5 min" are compared with the end


def alerted(hook: Any) -> tuple[dict[tuple[str, str], float], int]:
    """(key ARN, outside account) -> when the webhook first got its `added` alert; `removed`s."""
    got: dict[tuple[str, str], float] = {}
    removed = 0
    for at, alert in list(hook.received):
        kind = alert.get("kind")
        removed += kind in ("removed", "narrowed")
        if kind == "added":
            after = alert.get("after") if isinstance(alert.get("after"), dict) else {}
            principal = str(alert.get("principal", ""))
            account = after.get("principal_account") or (principal.split(":")[4] if principal.count(":") >= 4 else "")
            got.setdefault((str(alert.get("key_arn")), str(account)), at)
    return got, removed


def _anchor(samples: list[dict[str, Any]], minutes: float) -> dict[str, Any]:
    """The sample at 5 min (or, in a run of under 7.5 min, at a third of it: after warm-up)."""
    span = minutes * 60
    at = ANCHOR if span >= ANCHOR * 1.5 else span / 3
    return min(samples, key=lambda s: abs(s["t"] - at))


def _worker_lines(stopper: Any, store: dict[str, Any], log: Path) -> list[str]:
    lines = []
    if stopper.stopped_pid is None:
        return ["worker stopped: none (no worker process seen reading AWS after warm-up)"]
    killed = f"killed {stopper.killed_after:.1f} s after SIGSTOP" if stopper.killed_after is not None else "NOT killed"
    lines.append(f"worker stopped: pid {stopper.stopped_pid} (SIGSTOP), {killed}")
    failed_log = [
        json.loads(line)
        for line in log.read_text(errors="replace").splitlines()
        if '"scan.worker_failed"' in line and line.startswith("{")
    ]
    for entry in failed_log:
        lines.append(f"  daemon log scan.worker_failed: scopes={entry.get('scopes')} reason={entry.get('reason')}")
    after = [f for f in store["full_scans"] if f[1] >= (stopper.stopped_at or 0) - 120]
    hit = next((f for f in after if f[2]), None)
    if hit is None:
        lines.append("  no full-scan snapshot with failed scopes after the stop")
        return lines
    lines.append(f"  full scan snapshot {hit[0]}: failed scopes {hit[2]}")
    recovered = next((f for f in store["full_scans"] if f[0] > hit[0] and not f[2]), None)
    lines.append(
        f"  next full scan with every scope read: snapshot {recovered[0]}"
        if recovered
        else "  NO later full scan read every scope"
    )
    return lines


def print_report(
    args: argparse.Namespace,
    soak: Any,
    hook: Any,
    store: dict[str, Any],
    last: dict[str, Any],
    drain: dict[str, Any],
    stopper: Any,
    log: Path,
    proxy_summary: str,
    daemon_exit: int | None,
    poisons: int,
) -> int:
    truth = set(soak.truth)
    got, removed_alerts = alerted(hook)
    alerted_pairs = truth & set(got)
    latest = store["latest"]
    lost_latest = truth - latest
    lost_later = store["lost_any"]
    kinds = store["drift_kinds"]
    false_removed = sum(int(kinds.get(k, 0)) for k in ("removed", "narrowed"))
    anchor, m = _anchor(soak.samples, args.minutes), last["metrics"]
    print()
    print(
        f"== events soak: {args.minutes:g} min, {args.rate:g} changes/s, {args.fail:.0%} of GetKeyPolicy failing, "
        f"a poison message every {args.poison_every:g} s, {len(soak.keys)} keys, scan interval {args.interval}, "
        f"scope_deadline {args.scope_deadline}, [scan] processes = 2 =="
    )
    print(
        f"changes made: {len(truth)}; alerted (webhook `added` for key+outsider): {len(alerted_pairs)}; "
        f"present as findings in the final snapshot: {len(truth & latest)}"
    )
    delays = [got[p] - soak.truth[p] for p in alerted_pairs]
    if delays:
        print(
            f"  change → webhook alert: p50 {statistics.median(delays):.2f} s, p99 {percentile(delays, 99):.2f} s, "
            f"max {max(delays):.1f} s"
        )
    print(
        f"findings lost: {len(lost_latest)} ground-truth pairs absent from the latest snapshot; "
        f"{len(lost_later)} findings present in a snapshot and absent from a later one "
        f"(walked {store['snapshots']} snapshots)"
    )
    for pair in sorted(lost_latest)[:5] + sorted(lost_later)[:5]:
        print(f"  lost: {pair}")
    print(
        f"false removed: {false_removed} drift events `removed`/`narrowed` in the store, "
        f"{removed_alerts} received by the webhook; drift by kind {dict(sorted(kinds.items()))}"
    )
    for example in store["removed_examples"]:
        print(f"  e.g. {json.dumps(example)[:300]}")
    print(
        f"snapshots naming every configured scope: {store['snapshots'] - len(store['incomplete'])} of "
        f"{store['snapshots']}" + (f" (missing in {store['incomplete'][:10]})" if store["incomplete"] else "")
    )
    print(
        f"full scans (snapshots): {len(store['full_scans'])}; with failed scopes: "
        f"{sum(1 for f in store['full_scans'] if f[2])}"
    )
    ratio = last["rss"] / anchor["rss"] if anchor["rss"] else 0.0
    print(
        f"daemon RSS at {anchor['t']:.0f} s: {anchor['rss']:.1f} MB, at the end ({last['t']:.0f} s): "
        f"{last['rss']:.1f} MB (×{ratio:.3f}); open fds {anchor['fds']} → {last['fds']}; "
        f"threads {anchor['threads']} → {last['threads']}; findings held (kmsaudit_findings) "
        f"{anchor['findings']:.0f} → {last['findings']:.0f}"
    )
    print(
        "  asyncio task / botocore handler counts: not exposed by the daemon (no new public metric); "
        "handlers are measured by tests/aws/test_every_path.py::"
        "test_re_reads_leave_no_handler_behind_on_the_long_lived_client"
    )
    outcomes = last["events"]
    malformed = total(m, "kmsaudit_events_total", outcome="malformed")
    sent_malformed = sum(v for k, v in soak.poison.items() if k != "missing-key")
    print(
        f"poison messages sent: {poisons} {dict(sorted(soak.poison.items()))}; counted malformed by the daemon: "
        f"{malformed:.0f} (of {sent_malformed} malformed sent; the missing-key ones are re-read: the key is gone)"
    )
    print(f"  events by outcome: {dict(sorted((k, int(v)) for k, v in outcomes.items()))}")
    retried = log.read_text(errors="replace").count("events.kept_for_retry")
    drained = "NOT within the bound" if drain["drained_after"] is None else f"after {drain['drained_after']:.0f} s"
    print(
        f"  kept for retry (daemon log events.kept_for_retry): {retried}; queue at the end: {drain['queue']}; "
        f"dead-letter queue: {drain['dlq']}; drained {drained}, "
        f"a full scan after: {drain['scan_after']} (waited {drain['waited']:.0f} s)"
    )
    restarts = {k: v for k, v in m.get("kmsaudit_task_restarts_total", {}).items() if v}
    down = sorted({d for s in soak.samples for d in s["down"]})
    print(f"task restarts: {last['restarts']:.0f} {restarts or ''}; tasks seen down in a sample: {down or 'none'}")
    for line in _worker_lines(stopper, store, log):
        print(line)
    print(
        f"scope failures (kmsaudit_scope_failures_total): {last['scope_failures']:.0f}; "
        f"drift (metrics) {dict(sorted((k, int(v)) for k, v in last['drift'].items() if v))}"
    )
    try:
        injected = json.loads(proxy_summary.strip().splitlines()[-1]).get("injected", {})
    except (ValueError, IndexError):
        injected = {}
    print(f"re-reads failing (proxy-injected GetKeyPolicy failures): {sum(injected.values())} {injected}")
    print(f"daemon exit code after SIGTERM: {daemon_exit}; its log: {log}")
    unalerted = truth - set(got)
    bad = len(lost_latest) + len(lost_later) + false_removed + len(unalerted) + len(store["incomplete"])
    print(
        f"RESULT: {'PASS' if not bad else 'FAIL'} — lost {len(lost_latest) + len(lost_later)}, false removed "
        f"{false_removed}, never alerted {len(unalerted)}, snapshots missing a scope {len(store['incomplete'])}"
    )
    return 1 if bad else 0
