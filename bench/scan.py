"""Collector benchmark (issue #3), everything measured side by side in one run.

    python bench/scan.py [--keys 2000] [--sample 40] [--latency 0.05] [--skip-quotas | --quotas-only]
                         [--quota-fraction 0.1]

moto runs as its own process, behind tests/awsproxy.py (another process) that adds `--latency`
to every request and, in the quota runs, enforces SPEC §9's quotas at `--quota-fraction` of AWS's
(a token bucket per credentials × region × operation, as AWS meters them), at 0.95 and at the
default `quota_margin`. 2 accounts
× 2 regions, `--keys` keys in all. Prints:
  1. kmsaudit's scan time and calls/s;
  2. a sequential boto3 loop doing the same reads (timed on `--sample` keys, scaled linearly);
  3. the backend's ceiling: calls/s the proxy+moto path sustains under a saturating load, and the
     client CPU per request of kmsaudit against a concurrent aiobotocore loop doing the same reads;
  4. with quotas: kmsaudit's time against the bound (keys per scope ÷ scaled ListGrants rate),
     the throttling answers, and how many surfaced as scope failures (target 0).
Not a test: figures go in the issue note.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from loopback import free_port  # noqa: E402

from kmsaudit.demo.emulator import client  # noqa: E402

ACCOUNTS = ("111111111111", "222222222222")
REGIONS = ("us-east-1", "eu-west-1")


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    raise SystemExit("moto server did not start")


def start_proxy(
    upstream: str, latency: float, quotas: dict[str, float] | None = None
) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, str(REPO / "tests" / "awsproxy.py"), "--upstream", upstream, "--latency", str(latency)]
    if quotas:
        cmd += ["--quotas", json.dumps(quotas)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def stop(proc: subprocess.Popen) -> str:  # type: ignore[type-arg]
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out if isinstance(out, str) else ""


def seed(moto: str, n_keys: int) -> None:
    per_scope = n_keys // (len(ACCOUNTS) * len(REGIONS))
    for account in ACCOUNTS:
        for region in REGIONS:
            kms = client("kms", account, region, moto)
            for i in range(per_scope):
                policy = {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                            "Action": "kms:*",
                            "Resource": "*",
                        },
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNTS[1 - ACCOUNTS.index(account)]}:root"},
                            "Action": ["kms:Decrypt", "kms:DescribeKey"],
                            "Resource": "*",
                        },
                    ],
                }
                key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Policy=json.dumps(policy))
                if i % 10 == 0:
                    kms.create_grant(
                        KeyId=key["KeyMetadata"]["KeyId"],
                        Operations=["Verify"],
                        GranteePrincipal="arn:aws:iam::999999999999:role/partner",
                    )


def write_config(
    path: Path, quotas: dict[str, float] | None, margin: float, accounts: tuple[str, ...] = ACCOUNTS
) -> None:
    lines = ["[scan]", f"regions = {json.dumps(list(REGIONS))}", "concurrency = 64", f"quota_margin = {margin}"]
    if quotas:
        lines.append("quotas = { " + ", ".join(f"{k} = {v}" for k, v in quotas.items()) + " }")
    for account in accounts:
        lines += ["[[accounts]]", f'id = "{account}"', f'role_arn = "arn:aws:iam::{account}:role/KmsAuditReadOnly"']
    path.write_text("\n".join(lines) + "\n")


def run_kmsaudit(config: Path, endpoint: str) -> tuple[float, object]:
    """kmsaudit in its own process, as a user runs it, so it shares no interpreter with the rest."""
    code = (
        "import asyncio, json, sys, time\n"
        "from kmsaudit.config import load_config\nfrom kmsaudit.logging import configure\n"
        "from kmsaudit.scan import run_scan\n"
        "configure(json_logs=True, level='warning')\n"
        "import resource\n"
        "t = time.perf_counter(); c = time.process_time(); r = asyncio.run(run_scan(load_config(sys.argv[1])))\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'keys': r.keys, 'requests': r.requests,"
        " 'throttled': r.throttled, 'failed': len(r.failed_scopes), 'findings': len(r.findings),"
        " 'cpu': time.process_time() - c, 'evaluation_cpu': r.evaluation_cpu,"
        " 'children_cpu': kids.ru_utime + kids.ru_stime}))\n"
    )
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
    out = subprocess.run(
        [sys.executable, "-c", code, str(config)], capture_output=True, text=True, env=env, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["seconds"]), result


RAW_LOOP = """
import asyncio, json, sys, time
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from kmsaudit.demo.emulator import client

ACCOUNTS, REGIONS, endpoint = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]

async def scope(session, account, region, counter):
    creds = client("sts", account, region, endpoint)._request_signer._credentials
    async with session.create_client(
        "kms", region_name=region, endpoint_url=endpoint, aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key, aws_session_token=creds.token,
        config=AioConfig(max_pool_connections=64),
    ) as kms:
        keys = (await kms.list_keys(Limit=1000))["Keys"]
        await kms.list_aliases(Limit=100)
        counter[0] += 2
        queue = list(keys)
        async def worker():
            while queue:
                key = queue.pop()["KeyId"]
                await asyncio.gather(
                    kms.describe_key(KeyId=key), kms.get_key_policy(KeyId=key, PolicyName="default"),
                    kms.list_grants(KeyId=key, Limit=100), kms.list_resource_tags(KeyId=key, Limit=50),
                )
                counter[0] += 4
        await asyncio.gather(*(worker() for _ in range(32)))

async def main():
    counter = [0]
    session = get_session()
    await asyncio.gather(*(scope(session, a, r, counter) for a in ACCOUNTS for r in REGIONS))
    return counter[0]

c = time.process_time(); t = time.perf_counter()
n = asyncio.run(main())
print(json.dumps({"seconds": time.perf_counter() - t, "cpu": time.process_time() - c, "requests": n}))
"""


def raw_loop(endpoint: str, accounts: tuple[str, ...] = ACCOUNTS) -> dict[str, float]:
    """A hand-written concurrent aiobotocore loop doing the same KMS reads, in its own process:
    the client CPU an AWS request costs without kmsaudit (no pacing, no records, no evaluation)."""
    out = subprocess.run(
        [sys.executable, "-c", RAW_LOOP, json.dumps(accounts), json.dumps(REGIONS), endpoint],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def sequential_loop(endpoint: str, sample: int) -> tuple[float, int]:
    """The script a user would write: one call after another. Returns seconds per key and keys."""
    total_keys, seconds, done = 0, 0.0, 0
    per_scope = max(1, sample // (len(ACCOUNTS) * len(REGIONS)))
    for account in ACCOUNTS:
        for region in REGIONS:
            kms = client("kms", account, region, endpoint)
            t0 = time.perf_counter()
            keys = [k["KeyId"] for page in kms.get_paginator("list_keys").paginate() for k in page["Keys"]]
            [a for page in kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]]
            for key_id in keys[:per_scope]:
                kms.describe_key(KeyId=key_id)
                kms.get_key_policy(KeyId=key_id, PolicyName="default")
                [g for page in kms.get_paginator("list_grants").paginate(KeyId=key_id) for g in page["Grants"]]
                kms.list_resource_tags(KeyId=key_id)
            seconds += time.perf_counter() - t0
            total_keys += len(keys)
            done += min(per_scope, len(keys))
    return seconds / done, total_keys


async def ceiling(endpoint: str, seconds: float = 6.0, concurrency: int = 64) -> float:
    """Calls/s the path sustains: DescribeKey and GetKeyPolicy as fast as 64 workers can send them."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    kms_sync = client("kms", ACCOUNTS[0], REGIONS[0], endpoint)
    creds = kms_sync._request_signer._credentials
    key_ids = [k["KeyId"] for k in kms_sync.list_keys()["Keys"]][:200]
    session = get_session()
    calls = 0
    deadline = time.perf_counter() + seconds
    async with session.create_client(
        "kms",
        region_name=REGIONS[0],
        endpoint_url=endpoint,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
        config=AioConfig(max_pool_connections=concurrency),
    ) as kms:

        async def worker(i: int) -> None:
            nonlocal calls
            while time.perf_counter() < deadline:
                key = key_ids[(i + calls) % len(key_ids)]
                if calls % 2:
                    await kms.describe_key(KeyId=key)
                else:
                    await kms.get_key_policy(KeyId=key, PolicyName="default")
                calls += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return calls / (time.perf_counter() - t0)


def fake_credentials() -> None:
    """moto accepts any credentials; the proxy and moto are on loopback only."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)


def plain(args: argparse.Namespace, moto_url: str, tmp: Path) -> None:
    """kmsaudit against the sequential loop and the backend's ceiling, without quotas."""
    proxy, url = start_proxy(moto_url, args.latency)
    try:
        write_config(tmp / "plain.toml", None, 0.8)
        ours, info = run_kmsaudit(tmp / "plain.toml", url)
        per_key, total = sequential_loop(url, args.sample)
        top = asyncio.run(ceiling(url))
    finally:
        stop(proxy)
    assert isinstance(info, dict)
    ours_rate = info["requests"] / ours
    loop_total = per_key * total
    print(
        f"kmsaudit scan:          {ours:7.1f} s  {info['keys']} keys, {info['requests']} requests "
        f"({ours_rate:.0f} calls/s), {info['failed']} failed scopes"
    )
    print(
        f"sequential boto3 loop:  {loop_total:7.1f} s  (timed on {args.sample} keys: {per_key * 1000:.0f} ms "
        f"a key, × {total} keys)"
    )
    print(f"  speed-up: {loop_total / ours:.1f}× (target ≥ 15×)")
    print(f"backend ceiling:        {top:7.0f} calls/s through the same proxy (64 workers, saturating)")
    print(f"  kmsaudit reaches {ours_rate / top * 100:.0f} % of it (target ≥ 80 %)")
    proxy, url = start_proxy(moto_url, args.latency)
    try:
        raw = raw_loop(url)
        _, again = run_kmsaudit(tmp / "plain.toml", url)  # measured right beside it
    finally:
        stop(proxy)
    assert isinstance(again, dict)
    ours_cpu = again["cpu"] / again["requests"] * 1000
    raw_cpu = raw["cpu"] / raw["requests"] * 1000
    print(
        f"client CPU per AWS request: kmsaudit {ours_cpu:.2f} ms (evaluation and records included), "
        f"raw aiobotocore loop {raw_cpu:.2f} ms ({raw['requests']:.0f} requests in {raw['seconds']:.1f} s): "
        f"{ours_cpu / raw_cpu:.2f}× (target ≤ 1.15×)"
    )


def _proc_cpu(pid: int) -> float:
    """CPU seconds a process has used (Linux /proc), to set the backend's share apart."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def canned(args: argparse.Namespace) -> None:
    """The client's own cost (issue #18): bench/backend.py answers at a fraction of moto's CPU, and
    quotas are lifted, so what binds is kmsaudit's CPU. An estate of `--accounts` accounts × 2
    regions (16 scopes by default: an estate of a size where `processes` defaults to one per
    core). keys/s with 1 and 2 processes, and CPU per request against the raw aiobotocore loop,
    side by side in one run, interleaved and repeated (the machine is noisy)."""
    keys_wanted = args.keys or 10_000
    accounts = tuple(str(100_000_000_000 + i) for i in range(args.accounts))
    scopes = len(accounts) * len(REGIONS)
    per_scope = keys_wanted // scopes
    backend = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "backend.py"), "--keys-per-scope", str(per_scope)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert backend.stdout is not None
    url = backend.stdout.readline().strip()
    tmp = Path(tempfile.mkdtemp())
    lifted = {
        op: 1_000_000.0
        for op in (
            "ListKeys",
            "ListAliases",
            "DescribeKey",
            "GetKeyPolicy",
            "ListGrants",
            "GetKeyRotationStatus",
            "ListResourceTags",
        )
    }
    runs: dict[int, list[tuple[float, dict[str, float]]]] = {1: [], 2: []}
    raws: list[dict[str, float]] = []
    backend_cpu: list[float] = []
    try:
        for _ in range(args.repeat):  # interleaved: each kind sees the same noise
            for processes in (1, 2):
                write_config(tmp / "canned.toml", lifted, 1.0, accounts)
                text = (tmp / "canned.toml").read_text()
                (tmp / "canned.toml").write_text(text.replace("[scan]\n", f"[scan]\nprocesses = {processes}\n", 1))
                before = _proc_cpu(backend.pid)
                seconds, info = run_kmsaudit(tmp / "canned.toml", url)
                assert isinstance(info, dict) and not info["failed"], info
                runs[processes].append((seconds, info))
                backend_cpu.append((_proc_cpu(backend.pid) - before) / info["requests"] * 1000)
            raws.append(raw_loop(url, accounts))
    finally:
        backend.terminate()
        backend.communicate(timeout=10)

    keys = int(runs[1][0][1]["keys"])
    one = [seconds for seconds, _ in runs[1]]
    two = [seconds for seconds, _ in runs[2]]
    ratios = [a / b for a, b in zip(one, two, strict=True)]
    print(
        f"canned backend, {keys} keys over {scopes} scopes ({len(accounts)} accounts × {len(REGIONS)} regions), "
        f"quotas lifted, {args.repeat} interleaved rounds; the backend's own CPU: "
        f"{median(backend_cpu):.3f} ms a request"
    )
    print(f"  1 process:   median {median(one):6.2f} s  {keys / median(one):5.0f} keys/s  (runs: {fmt(one)})")
    print(f"  2 processes: median {median(two):6.2f} s  {keys / median(two):5.0f} keys/s  (runs: {fmt(two)})")
    print(
        f"  2 processes / 1 process, round by round: {fmt(ratios, '×')}; median {median(ratios):.2f}× "
        "(target ≥ 1.5× on 2 cores, the backend sharing them)"
    )
    ours = [info["cpu"] / info["requests"] * 1000 for _, info in runs[1]]
    requests_only = [(info["cpu"] - info["evaluation_cpu"]) / info["requests"] * 1000 for _, info in runs[1]]
    workers = [(info["cpu"] + info["children_cpu"]) / info["requests"] * 1000 for _, info in runs[2]]
    raw = [r["cpu"] / r["requests"] * 1000 for r in raws]
    cpu_ratios = [a / b for a, b in zip(ours, raw, strict=True)]
    print(
        f"  client CPU per AWS request: kmsaudit {median(ours):.2f} ms with the evaluation "
        f"({median(requests_only):.2f} ms without it), raw aiobotocore loop {median(raw):.2f} ms; "
        f"round by round {fmt(cpu_ratios, '×')}, median {median(cpu_ratios):.2f}× (target ≤ 1.15×)"
    )
    print(f"  with 2 processes, all processes together: {median(workers):.2f} ms a request")
    rate = keys / median(two)
    print(
        f"  100,000 keys at {rate:.0f} keys/s: {100_000 / rate / 60:.1f} min of client time (target < 15 min); "
        "AWS's quotas add their own bound: 80 keys/s per account and region at the default margin"
    )


def fmt(values: list[float], unit: str = "") -> str:
    return ", ".join(f"{v:.2f}{unit}" for v in values)


def main() -> None:
    fake_credentials()
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=None, help="keys in all (default 2,000; 10,000 with --canned)")
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--skip-quotas", action="store_true")
    ap.add_argument("--quotas-only", action="store_true", help="only the runs against the quota proxy")
    ap.add_argument("--quota-fraction", type=float, default=0.1, help="the proxy's quotas: this share of AWS's")
    ap.add_argument("--canned", action="store_true", help="only the client-cost runs, on bench/backend.py")
    ap.add_argument("--accounts", type=int, default=8, help="with --canned: accounts (× 2 regions)")
    ap.add_argument("--repeat", type=int, default=3, help="with --canned: interleaved rounds")
    args = ap.parse_args()
    if args.canned:
        canned(args)
        return
    args.keys = args.keys or 2000
    from kmsaudit.config.settings import DEFAULT_QUOTAS

    moto, moto_url = start_moto()
    try:
        t0 = time.perf_counter()
        seed(moto_url, args.keys)
        print(
            f"seeded {args.keys} keys over {len(ACCOUNTS)} accounts × {len(REGIONS)} regions "
            f"in {time.perf_counter() - t0:.0f} s; proxy latency {args.latency * 1000:.0f} ms"
        )
        tmp = Path(tempfile.mkdtemp())
        if not args.quotas_only:
            plain(args, moto_url, tmp)
        if args.skip_quotas:
            return
        scaled = {op: rate * args.quota_fraction for op, rate in DEFAULT_QUOTAS.items()}
        from kmsaudit.config.settings import ScanSettings

        for margin in (0.95, ScanSettings().quota_margin):
            proxy, url = start_proxy(moto_url, args.latency, scaled)
            try:
                write_config(tmp / "quota.toml", scaled, margin)
                quota_time, qinfo = run_kmsaudit(tmp / "quota.toml", url)
            finally:
                proxy_stats = stop(proxy)
            assert isinstance(qinfo, dict)
            per_scope = args.keys / (len(ACCOUNTS) * len(REGIONS))
            bound = per_scope / (scaled["ListGrants"] * margin)
            print(
                f"with quotas × {args.quota_fraction:g}, margin {margin}: {quota_time:6.1f} s against the bound "
                f"{bound:.1f} s (keys per "
                f"scope ÷ {scaled['ListGrants'] * margin:.1f} ListGrants/s): {quota_time / bound:.2f}× (target ≤ 1.1×)"
            )
            print(
                f"  throttling answers from the proxy: "
                f"{proxy_stats.strip().splitlines()[-1] if proxy_stats else '?'}; "
                f"seen by kmsaudit: {qinfo['throttled']} (target 0 at the default margin); "
                f"failed scopes: {qinfo['failed']} (target 0)"
            )
    finally:
        stop(moto)


if __name__ == "__main__":
    main()
