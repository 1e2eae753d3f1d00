"""The fault suite's figures (issue #7): faults injected and survived, crash points tried, inputs
fuzzed, findings and alerts lost, secrets leaked — from one run of tests/faults — and the time a
32 KB hostile policy takes, beside the backtracking regex the wildcard matcher replaced.

    python bench/faults.py [--fuzz-scale 10]

A benchmark, not a test: the pass/fail answers are the tests' own; this prints the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _time_hostile_policy() -> tuple[float, int]:
    from helpers import hostile_policy, principal, run

    role = "arn:aws:iam::222222222222:role/Reader"
    times = []
    for tag in range(7):
        policy = hostile_policy(tag=tag, principal_arn=role)
        iam = principal(role, {"Statement": hostile_policy(tag=tag + 100, principal_arn=role)["Statement"]})
        started = time.perf_counter()
        run(policy, iam, audited=("222222222222",))
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, len(json.dumps(policy))


def _time_wildcards() -> tuple[float, float, int]:
    """`*a`×n + `b` against `a`×60: the linear matcher, and the regex it replaced (n where the
    regex still finishes within a second)."""
    from kmsaudit.evaluator.match import Wildcard

    value = "a" * 60
    n = 4
    while True:
        pattern = "*a" * n + "b"
        regex = re.compile("".join(".*" if c == "*" else re.escape(c) for c in pattern), re.DOTALL)
        started = time.perf_counter()
        regex.fullmatch(value)
        regex_seconds = time.perf_counter() - started
        if regex_seconds > 0.5 or n >= 12:
            break
        n += 1
    matcher = Wildcard(pattern)
    started = time.perf_counter()
    for _ in range(1000):
        matcher.fullmatch(value)
    linear_seconds = (time.perf_counter() - started) / 1000
    return regex_seconds, linear_seconds, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fuzz-scale", type=float, default=1.0, help="multiply the fuzzers' example counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        env = {**os.environ, "KMSAUDIT_FAULT_REPORT": str(report_path), "KMSAUDIT_FUZZ_SCALE": str(args.fuzz_scale)}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", str(REPO / "tests" / "faults")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
        summaries = [line for line in done.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
        summary = summaries[-1].strip("= ") if summaries else done.stderr[-500:]
        counts = json.loads(report_path.read_text()) if report_path.exists() else {}

    print(f"tests/faults: {summary} ({seconds:.0f} s, fuzz scale {args.fuzz_scale:g})")
    rows = [
        ("faults injected (AWS answers broken on purpose)", counts.get("faults_injected", 0)),
        ("  throttling", counts.get("injected_throttle", 0)),
        ("  HTTP 500", counts.get("injected_500", 0)),
        ("  HTTP 503", counts.get("injected_503", 0)),
        ("  connection resets", counts.get("injected_reset", 0)),
        ("  answers cut off halfway", counts.get("injected_truncated", 0)),
        ("  answers slower than the client timeout", counts.get("injected_slow", 0)),
        ("transient faults (retries can absorb them)", counts.get("transient_faults_injected", 0)),
        ("  survived: findings identical to a clean run, no drift", counts.get("transient_faults_survived", 0)),
        ("persistent faults (no retry can absorb them)", counts.get("persistent_faults", 0)),
        ("  reported as failed scopes: nothing partial, no drift", counts.get("persistent_faults_reported_failed", 0)),
        ("requests through the fault proxy", counts.get("fault_requests", 0)),
        ("findings compared with a clean run", counts.get("findings_compared", 0)),
        ("findings lost", counts.get("findings_lost", 0)),
        ("crash points tried (SIGKILL)", counts.get("crash_points", 0)),
        ("  survived (integrity_check ok, last snapshot whole)", counts.get("crash_points_survived", 0)),
        ("alerts checked across crashes", counts.get("alerts_checked", 0)),
        ("alerts lost", counts.get("alerts_lost", 0)),
        ("policy documents fuzzed through the evaluator", counts.get("policies_fuzzed", 0)),
        ("inputs fuzzed through `kmsaudit evaluate`", counts.get("cli_inputs_fuzzed", 0)),
        ("config files fuzzed", counts.get("configs_fuzzed", 0)),
        ("  rejected with exit 2 and one line", counts.get("configs_rejected", 0)),
        ("secret × place checks (logs, errors, metrics, database)", counts.get("secret_places_checked", 0)),
        ("secrets leaked", counts.get("secrets_leaked", 0)),
    ]
    for label, value in rows:
        print(f"{label:<66} {value:>8}")

    ms, size = _time_hostile_policy()
    print(f"\n32 KB hostile policy ({size:,} bytes, key policy and IAM policy): {ms:.1f} ms to evaluate (median of 7)")
    regex_s, linear_s, n = _time_wildcards()
    print(
        f"wildcard '*a'x{n}+'b' against 'a'x60: backtracking regex {regex_s * 1000:.0f} ms, "
        f"linear matcher {linear_s * 1e6:.1f} µs ({regex_s / linear_s:,.0f}x); the regex doubles with each '*a' more"
    )
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
