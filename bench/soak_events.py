"""Events soak (issue #24, Acceptance): the daemon for `--minutes` with events at `--rate`/s, a
fraction `--fail` of GetKeyPolicy reads failing, a poison message every `--poison-every` seconds
and one worker process stopped (SIGSTOP) mid-scan.

    python bench/soak_events.py [--minutes 30] [--rate 5] [--fail 0.1] [--poison-every 60]
                                [--keys 100] [--interval 2m] [--scope-deadline 60s] [--latency 0.02]

moto runs as its own process behind tests/awsproxy.py (another process), which answers a seeded
`--fail` of the GetKeyPolicy requests with KMSInternalException (500, botocore retries it) or
AccessDeniedException (400, it does not: the key is unreadable): event re-reads and full scans
alike. `kmsaudit daemon` (a third process, `[scan] processes = 2`, 2 accounts × 2 regions) reads
one SQS queue in moto (visibility 30 s, a dead-letter queue after 5 receives) and alerts to a
local webhook. At `--rate` per second one key trusts one MORE outside account (access is never
removed, so any `removed` drift is false) and the CloudTrail PutKeyPolicy message EventBridge
would deliver is sent; poison messages take turns (not JSON; `detail.resources: 5`; `detail` a
string; a well-formed event naming a key that does not exist). After warm-up, the first worker
process seen reading AWS during a full scan is stopped; the daemon must kill it past
`[scan] scope_deadline` and fail its scopes, and the next scan read them. Every ~10 s: the
daemon's RSS, open fds, threads and its /metrics. At the end: sending stops, the queue drains and
one more full scan commits (bounded, 5 min); then the store and the webhook are read and it prints
changes made / alerted / present in the final snapshot, findings lost (walking every snapshot),
false `removed`, snapshots missing a scope, RSS / fds / threads at 5 min against the end, poison
and retried messages, task restarts, the stopped worker, the injected failures. Exits 1 if a
finding was lost, a `removed` was false, a change never alerted or a snapshot missed a scope.
Not a test: figures go in the issue note.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from events import Hook  # noqa: E402
from loopback import free_port, get_until  # noqa: E402
from scan import ACCOUNTS, REGIONS, fake_credentials, start_moto, stop  # noqa: E402
from soak_parts import WorkerStopper, by, event, poison, policy, proc_stats, scrape, total, walk_store  # noqa: E402
from soak_report import alerted, print_report  # noqa: E402

from kmsaudit.demo.emulator import client  # noqa: E402

SCOPES = {(a, r) for a in ACCOUNTS for r in REGIONS}
SAMPLE_EVERY = 10.0
DRAIN_LIMIT = 300.0


def start_proxy(upstream: str, latency: float, fail: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, str(REPO / "tests" / "awsproxy.py"), "--upstream", upstream, "--latency", str(latency)]
    cmd += ["--fail-rate", str(fail), "--fail-operations", "GetKeyPolicy"]
    cmd += ["--fail-codes", "KMSInternalException,AccessDeniedException"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def write_config(work: Path, args: argparse.Namespace, queue: str, listen: int) -> Path:
    lines = [
        "[scan]",
        f"regions = {json.dumps(list(REGIONS))}",
        f'interval = "{args.interval}"',
        "concurrency = 64",
        "processes = 2",
        f'scope_deadline = "{args.scope_deadline}"',
    ]
    for account in ACCOUNTS:
        lines += ["[[accounts]]", f'id = "{account}"', f'role_arn = "arn:aws:iam::{account}:role/KmsAuditReadOnly"']
    lines += ["[store]", f'path = "{work / "soak.db"}"', "[daemon]", f'listen = "127.0.0.1:{listen}"']
    lines += ["[events]", f'queues = ["{queue}"]', f'region = "{REGIONS[0]}"']
    lines += ["[[alerts]]", 'name = "hook"', 'type = "webhook"', 'url_env = "SOAK_HOOK"', 'min_severity = "low"']
    (work / "soak.toml").write_text("\n".join(lines) + "\n")
    return work / "soak.toml"


def queue_depth(sqs: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(n, 0)) for n in names)


def log_count(log: Path, name: str) -> int:
    return log.read_text(errors="replace").count(f'"{name}"')


class Soak:
    def __init__(self, args: argparse.Namespace, moto_url: str) -> None:
        self.args = args
        self.kms = {scope: client("kms", scope[0], scope[1], moto_url) for scope in sorted(SCOPES)}
        self.keys: list[tuple[str, str]] = []  # (scope account, key ARN)
        self.outsiders: dict[str, list[str]] = {}  # key ARN -> the outside accounts it trusts
        self.truth: dict[tuple[str, str], float] = {}  # (key ARN, outsider) -> when its message was sent
        self.poison: dict[str, int] = {}
        self.samples: list[dict[str, Any]] = []

    def seed(self) -> None:
        per_scope = max(1, self.args.keys // len(SCOPES))
        for (account, _), kms in self.kms.items():
            for _ in range(per_scope):
                arn = kms.create_key(Policy=policy(account, []))["KeyMetadata"]["Arn"]
                self.keys.append((account, arn))
                self.outsiders[arn] = []
        random.Random(24).shuffle(self.keys)

    def change(self, n: int, sqs: Any, queue: str) -> None:
        account, arn = self.keys[n % len(self.keys)]
        outsider = f"3{n:011d}"
        self.outsiders[arn].append(outsider)
        region = arn.split(":")[3]
        self.kms[(account, region)].put_key_policy(
            KeyId=arn, PolicyName="default", Policy=policy(account, self.outsiders[arn])
        )
        self.truth[(arn, outsider)] = time.time()
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event(arn)))

    def send_poison(self, n: int, sqs: Any, queue: str) -> None:
        kind, body = poison(n, sorted(SCOPES)[n % len(SCOPES)])
        self.poison[kind] = self.poison.get(kind, 0) + 1
        sqs.send_message(QueueUrl=queue, MessageBody=body)

    def sample(self, pid: int, base: str, started: float) -> dict[str, Any]:
        rss, fds, threads = proc_stats(pid)
        m = scrape(base)
        row = {
            "t": time.monotonic() - started,
            "rss": rss,
            "fds": fds,
            "threads": threads,
            "restarts": total(m, "kmsaudit_task_restarts_total"),
            "down": [k for k, v in m.get("kmsaudit_task_up", {}).items() if v < 1],
            "events": by(m, "kmsaudit_events_total", "outcome"),
            "drift": by(m, "kmsaudit_drift_events_total", "kind"),
            "scope_failures": total(m, "kmsaudit_scope_failures_total"),
            "findings": total(m, "kmsaudit_findings"),
            "metrics": m,
        }
        self.samples.append(row)
        return row


def run(args: argparse.Namespace) -> int:
    fake_credentials()
    moto, moto_url = start_moto()
    proxy, proxy_url = start_proxy(moto_url, args.latency, args.fail)
    hook = Hook()
    daemon: subprocess.Popen[bytes] | None = None
    work = Path(tempfile.mkdtemp(prefix="kmsaudit-soak-"))
    log = work / "daemon.log"
    proxy_summary = ""
    try:
        soak = Soak(args, moto_url)
        soak.seed()
        import boto3

        sqs = boto3.client("sqs", region_name=REGIONS[0], endpoint_url=moto_url)
        dlq = sqs.create_queue(QueueName="kmsaudit-events-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
        queue = sqs.create_queue(
            QueueName="kmsaudit-events", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive}
        )["QueueUrl"]
        port, listen = hook.start(), free_port()
        config = write_config(work, args, queue, listen)
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy_url, "SOAK_HOOK": f"http://127.0.0.1:{port}/"}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "kmsaudit", "daemon", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
            env=env,
        )
        base = f"http://127.0.0.1:{listen}"
        get_until(f"{base}/readyz", lambda s, _: s == 200, attempts=3000)
        print(f"{len(soak.keys)} keys in {len(SCOPES)} scopes; daemon ready; work dir {work}", flush=True)
        time.sleep(2)  # the consumer starts after the first full scan
        stopper = WorkerStopper(daemon.pid, int(proxy_url.rsplit(":", 1)[1]))
        stopper.start()
        started = time.monotonic()
        end = started + args.minutes * 60
        arm_at = started + min(300.0, args.minutes * 60 / 4)  # after warm-up, at most 5 min in
        n = poisons = 0
        next_sample = next_poison = next_change = started
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                row = soak.sample(daemon.pid, base, started)
                next_sample += SAMPLE_EVERY
                print(
                    f"t={row['t']:6.0f}s rss={row['rss']:.1f}MB fds={row['fds']} threads={row['threads']} "
                    f"findings={row['findings']:.0f} changes={n} restarts={row['restarts']:.0f} "
                    f"events={dict(sorted(row['events'].items()))}",
                    flush=True,
                )
            if now >= next_poison:
                soak.send_poison(poisons, sqs, queue)
                poisons += 1
                next_poison += args.poison_every
            if now >= arm_at and not stopper.armed.is_set():
                stopper.armed.set()
            if now >= next_change:
                soak.change(n, sqs, queue)
                n += 1
                next_change = started + n / args.rate
            time.sleep(max(0.0, min(next_change, next_sample, next_poison, end) - time.monotonic()))
        sent_end = time.monotonic()
        scans_before = log_count(log, "daemon.scan")
        deadline = sent_end + DRAIN_LIMIT
        drained_at = None
        while time.monotonic() < deadline:
            if drained_at is None and queue_depth(sqs, queue) == 0:
                drained_at = time.monotonic()
            if drained_at is not None and log_count(log, "daemon.scan") > scans_before:
                break
            time.sleep(1.0)
        while time.monotonic() < deadline and len(set(soak.truth) - set(alerted(hook)[0])) > 0:
            time.sleep(1.0)  # the outbox delivers what the last snapshots raised
        time.sleep(3.0)
        last = soak.sample(daemon.pid, base, started)
        drain = {
            "queue": queue_depth(sqs, queue),
            "dlq": queue_depth(sqs, dlq),
            "drained_after": None if drained_at is None else drained_at - sent_end,
            "scan_after": log_count(log, "daemon.scan") > scans_before,
            "waited": time.monotonic() - sent_end,
        }
        stopper.quit.set()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        daemon_exit = daemon.returncode
        daemon = None
        proxy_summary = stop(proxy)
        outsiders = {o: arn for arn, os_ in soak.outsiders.items() for o in os_}
        store = walk_store(work / "soak.db", SCOPES, outsiders)
        return print_report(args, soak, hook, store, last, drain, stopper, log, proxy_summary, daemon_exit, poisons)
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
        if proxy.poll() is None:
            stop(proxy)
        hook.stop()
        stop(moto)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=5.0, help="changes (events) per second")
    ap.add_argument("--fail", type=float, default=0.1, help="fraction of GetKeyPolicy reads answered an error")
    ap.add_argument("--poison-every", type=float, default=60.0, help="seconds between poison messages")
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--interval", default="2m", help="[scan] interval")
    ap.add_argument("--scope-deadline", default="60s", help="[scan] scope_deadline")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds the proxy adds to every request")
    sys.exit(run(ap.parse_args()))


if __name__ == "__main__":
    main()
