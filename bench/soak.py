"""Soak (issues #5, #19): the daemon's scan cycle, 200 times against moto (its own process),
watching memory (RSS), open files and asyncio tasks for growth beyond warm-up. With `--sinks`,
two webhook sinks (one healthy, one that accepts connections and never answers) and a drift
event every cycle: how many events the healthy sink got within their own scan. Not a test.

    python bench/soak.py [--cycles 200] [--keys 40] [--sinks]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from scan import ACCOUNTS, REGIONS, fake_credentials, seed, start_moto, stop, write_config  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


async def soak(
    config_path: Path, cycles: int, change: Any = None, healthy: Any = None
) -> tuple[list[tuple[int, float, int, int]], int, int]:
    """Samples, and (with sinks) events raised and events the healthy sink got in their own scan."""
    from kmsaudit.config.settings import load_config
    from kmsaudit.logging import configure
    from kmsaudit.run.daemon import Daemon
    from kmsaudit.store.database import Store

    configure(json_logs=True, level="error")
    daemon = Daemon(config_path, load_config(config_path))
    samples = []
    raised = on_time = 0
    for cycle in range(1, cycles + 1):
        if change is not None and cycle > 1:
            change(cycle)
        await daemon.scan_once()
        if healthy is not None:
            store = Store(daemon.config.store.path, create=False)
            try:
                snapshot = store.latest_snapshot()
                ids = {e["id"] for e in store.drift() if e["snapshot_id"] == snapshot}
            finally:
                store.close()
            raised += len(ids)
            on_time += len(ids & set(healthy.keys))
        if cycle % 10 == 0 or cycle == 1:
            samples.append((cycle, rss_mb(), open_files(), len(asyncio.all_tasks())))
    return samples, raised, on_time


def _trust_a_new_account(url: str) -> Any:
    """Each cycle, the first key of the first scope trusts one more outside account: one event."""
    import json

    from kmsaudit.demo.emulator import client

    kms = client("kms", ACCOUNTS[0], REGIONS[0], url)
    key = kms.list_keys()["Keys"][0]["KeyId"]

    def change(cycle: int) -> None:
        doc = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
        doc["Statement"].append(
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{900000000000 + cycle}:root"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            }
        )
        kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(doc))

    return change


def main() -> None:
    fake_credentials()
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--keys", type=int, default=40)
    ap.add_argument("--sinks", action="store_true", help="a healthy and a blackholed webhook, drift every cycle")
    args = ap.parse_args()
    moto, url = start_moto()
    healthy = hole = None
    try:
        seed(url, args.keys)
        os.environ["AWS_ENDPOINT_URL"] = url
        tmp = Path(tempfile.mkdtemp())
        write_config(tmp / "soak.toml", None, 0.8)
        with open(tmp / "soak.toml", "a") as f:
            f.write(f'[store]\npath = "{tmp / "soak.db"}"\n')
        change = None
        if args.sinks:
            from loopback import Blackhole, RecordingReceiver

            healthy, hole = RecordingReceiver(), Blackhole()
            os.environ["SOAK_HEALTHY"] = f"http://127.0.0.1:{healthy.start()}/hook"
            os.environ["SOAK_DEAD"] = f"http://127.0.0.1:{hole.port}/hook"
            with open(tmp / "soak.toml", "a") as f:
                for name in ("dead", "healthy"):
                    f.write(f'[[alerts]]\nname = "{name}"\ntype = "webhook"\nurl_env = "SOAK_{name.upper()}"\n')
                    f.write('min_severity = "low"\n')
            change = _trust_a_new_account(url)
        t0 = time.perf_counter()
        samples, raised, on_time = asyncio.run(soak(tmp / "soak.toml", args.cycles, change, healthy))
        elapsed = time.perf_counter() - t0
    finally:
        stop(moto)
        if healthy is not None and hole is not None:
            healthy.stop()
            hole.close()
    if args.sinks:
        print(
            f"sinks: {raised} drift events raised, {on_time} delivered to the healthy sink within their own scan "
            f"(target: all), while the other sink never answered"
        )
    print(
        f"{args.cycles} scan cycles of {args.keys} keys ({len(ACCOUNTS)} accounts × {len(REGIONS)} regions) "
        f"in {elapsed:.0f} s"
    )
    print("cycle   RSS MB   open files   asyncio tasks")
    for cycle, rss, fds, tasks in samples:
        print(f"{cycle:5d}  {rss:7.1f}  {fds:11d}  {tasks:14d}")
    warm = [s for s in samples if s[0] >= 20]
    if len(warm) >= 2:
        first, last = warm[0], warm[-1]
        print(
            f"after warm-up (cycle {first[0]} → {last[0]}): RSS {last[1] - first[1]:+.1f} MB, "
            f"open files {last[2] - first[2]:+d}, asyncio tasks {last[3] - first[3]:+d}"
        )


if __name__ == "__main__":
    main()
