"""Soak (issue #5): the daemon's scan cycle, 200 times against moto (its own process), watching
memory (RSS), open files and asyncio tasks for growth beyond warm-up. Not a test.

    python bench/soak.py [--cycles 200] [--keys 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scan import ACCOUNTS, REGIONS, fake_credentials, seed, start_moto, stop, write_config  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


async def soak(config_path: Path, cycles: int) -> list[tuple[int, float, int, int]]:
    from kmsaudit.config import load_config
    from kmsaudit.daemon import Daemon
    from kmsaudit.logging import configure

    configure(json_logs=True, level="error")
    daemon = Daemon(config_path, load_config(config_path))
    samples = []
    for cycle in range(1, cycles + 1):
        await daemon.scan_once()
        if cycle % 10 == 0 or cycle == 1:
            samples.append((cycle, rss_mb(), open_files(), len(asyncio.all_tasks())))
    return samples


def main() -> None:
    fake_credentials()
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--keys", type=int, default=40)
    args = ap.parse_args()
    moto, url = start_moto()
    try:
        seed(url, args.keys)
        os.environ["AWS_ENDPOINT_URL"] = url
        tmp = Path(tempfile.mkdtemp())
        write_config(tmp / "soak.toml", None, 0.8)
        with open(tmp / "soak.toml", "a") as f:
            f.write(f'[store]\npath = "{tmp / "soak.db"}"\n')
        t0 = time.perf_counter()
        samples = asyncio.run(soak(tmp / "soak.toml", args.cycles))
        elapsed = time.perf_counter() - t0
    finally:
        stop(moto)
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
