"""Real-time detection benchmark (issue #17): event → alert enqueued, and AWS requests per event.

    python bench/events.py [--keys 1000] [--events 100] [--rate 5] [--latency 0.05]

moto runs as its own process behind tests/awsproxy.py (another process) adding `--latency` to
every request; `kmsaudit daemon` (a third) reads an SQS queue in moto. After its first full scan,
`--events` keys are changed one by one (each now trusts one more outside account) at `--rate`
events per second, each followed by the CloudTrail message EventBridge would deliver. Prints the
p50 / p99 of event → alert enqueued (the drift's `detected_at` minus the moment the message was
sent) and of event → alert received by the webhook, and the daemon's AWS requests per event from
its own counters (kmsaudit_aws_requests_total). CloudTrail → EventBridge → SQS adds its own
delivery time on AWS, before any of this starts. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
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

from aiohttp import web  # noqa: E402
from loopback import LocalReceiver, free_port, get_until, http_get  # noqa: E402
from scan import fake_credentials, start_moto, start_proxy, stop  # noqa: E402
from soak_parts import event  # noqa: E402

from kmsaudit.demo.emulator import client  # noqa: E402

ACCOUNT, REGION = "111111111111", "us-east-1"


class Hook(LocalReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[float, dict[str, Any]]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((time.time(), json.loads(await request.read())))
        return web.Response(status=200)


def policy(*outsiders: str) -> str:
    statements = [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"}
    ]
    statements += [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{o}:root"}, "Action": "kms:Decrypt", "Resource": "*"}
        for o in outsiders
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def message(key_arn: str) -> str:
    """The CloudTrail PutKeyPolicy message EventBridge delivers for `key_arn` (bench/soak_parts.py)."""
    return json.dumps(event(key_arn))


def requests(base: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in http_get(f"{base}/metrics")[1].splitlines():
        if line.startswith("kmsaudit_aws_requests_total{"):
            operation = line.split('operation="', 1)[1].split('"', 1)[0]
            out[operation] = out.get(operation, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--rate", type=float, default=5.0, help="events per second")
    ap.add_argument("--latency", type=float, default=0.05)
    args = ap.parse_args()
    fake_credentials()
    moto, moto_url = start_moto()
    proxy, proxy_url = start_proxy(moto_url, args.latency)
    hook = Hook()
    daemon = None
    try:
        kms = client("kms", ACCOUNT, REGION, moto_url)
        started = time.monotonic()
        arns = [kms.create_key(Policy=policy("222222222222"))["KeyMetadata"]["Arn"] for _ in range(args.keys)]
        print(f"seeded {len(arns)} keys in {time.monotonic() - started:.1f} s")
        import boto3

        # The queue is in the account of the ambient credentials the daemon reads it with.
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
        queue = sqs.create_queue(QueueName="kmsaudit-events")["QueueUrl"]
        port, listen = hook.start(), free_port()
        work = Path(tempfile.mkdtemp())
        (work / "k.toml").write_text(
            f'[scan]\nregions = ["{REGION}"]\ninterval = "1h"\nconcurrency = 64\n\n'
            f'[[accounts]]\nid = "{ACCOUNT}"\nrole_arn = "arn:aws:iam::{ACCOUNT}:role/KmsAuditReadOnly"\n\n'
            f'[store]\npath = "{work / "k.db"}"\n\n[daemon]\nlisten = "127.0.0.1:{listen}"\n\n'
            f'[events]\nqueues = ["{queue}"]\nregion = "{REGION}"\n\n'
            '[[alerts]]\nname = "hook"\ntype = "webhook"\nurl_env = "BENCH_HOOK"\nmin_severity = "low"\n'
        )
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy_url, "BENCH_HOOK": f"http://127.0.0.1:{port}/"}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "kmsaudit", "daemon", "--config", str(work / "k.toml")],
            stdout=subprocess.DEVNULL,
            stderr=(work / "daemon.log").open("w"),
            env=env,
        )
        base = f"http://127.0.0.1:{listen}"
        started = time.monotonic()
        get_until(f"{base}/readyz", lambda s, _: s == 200, attempts=3000)
        print(f"first full scan through the {args.latency * 1000:.0f} ms proxy: {time.monotonic() - started:.1f} s")
        time.sleep(2)  # the consumer starts polling after the first scan
        before = requests(base)
        sent: dict[str, float] = {}
        for i, arn in enumerate(arns[: args.events]):
            kms.put_key_policy(KeyId=arn, PolicyName="default", Policy=policy("222222222222", f"3{i:011d}"))
            sent[arn] = time.time()
            sqs.send_message(QueueUrl=queue, MessageBody=message(arn))
            time.sleep(max(0.0, 1 / args.rate - (time.time() - sent[arn])))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = {a["key_arn"] for _, a in hook.received if a.get("kind") == "added"}
            if len(got & set(sent)) >= len(sent):
                break
            time.sleep(0.2)
        after = requests(base)
        enqueued, received = [], []
        for at, alert in hook.received:
            if alert.get("kind") == "added" and alert.get("key_arn") in sent:
                enqueued.append(float(alert["detected_at"]) - sent[alert["key_arn"]])
                received.append(at - sent[alert["key_arn"]])
        if not enqueued:
            raise SystemExit(f"no alert for the {len(sent)} events: see the daemon's log {work / 'daemon.log'}")
        print(
            f"{len(enqueued)} of {len(sent)} events alerted; event → alert enqueued p50 "
            f"{statistics.median(enqueued):.2f} s, p99 {percentile(enqueued, 99):.2f} s (target p99 < 5 s); "
            f"→ webhook received p50 {statistics.median(received):.2f} s, p99 {percentile(received, 99):.2f} s"
        )
        per_event = {op: (after.get(op, 0) - before.get(op, 0)) / max(1, len(sent)) for op in after}
        shown = ", ".join(f"{op} {n:.2f}" for op, n in sorted(per_event.items()) if n)
        print(f"AWS requests per event (the daemon's counters): {sum(per_event.values()):.2f} — {shown}")
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
        hook.stop()
        stop(proxy)
        stop(moto)


if __name__ == "__main__":
    main()
