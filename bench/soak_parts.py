"""Parts of the events soak (bench/soak_events.py): what it sends (policies, CloudTrail messages,
poison bodies), what it watches (the daemon's process, its worker processes, its /metrics) and
how it reads the store at the end (every snapshot walked, scope by scope). Not a test.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from loopback import http_get  # noqa: E402

Scope = tuple[str, str]
Pair = tuple[str, str]  # (key ARN, outside account that must be a finding)
POISON_KINDS = ("not-json", "resources-5", "detail-string", "missing-key")


def policy(account: str, outsiders: Iterable[str], version: int = 0) -> str:
    """`version`: the Sid of the account's own statement — a change of the text, not of access."""
    statements = [
        {
            "Sid": f"Admin{version}",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    statements += [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{o}:root"}, "Action": "kms:Decrypt", "Resource": "*"}
        for o in outsiders
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def event(key_arn: str) -> dict[str, Any]:
    """The CloudTrail PutKeyPolicy event EventBridge delivers for `key_arn`."""
    region, account = key_arn.split(":")[3:5]
    doc = json.loads((REPO / "tests" / "data" / "cloudtrail" / "kms-PutKeyPolicy.json").read_text())
    detail = doc["detail"]
    detail.update(
        eventID=str(uuid.uuid4()),
        eventTime=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        awsRegion=region,
        recipientAccountId=account,
        resources=[{"accountId": account, "type": "AWS::KMS::Key", "ARN": key_arn}],
    )
    detail["requestParameters"]["keyId"] = key_arn.rsplit("/", 1)[1]
    doc.update(account=account, region=region)
    return doc


def poison(n: int, scope: Scope) -> tuple[str, str]:
    """The n-th poison message (kind, body), in turn: not JSON at all; `detail.resources: 5` (and
    no key id elsewhere); `detail` a string; a well-formed event naming a key that does not exist."""
    kind = POISON_KINDS[n % len(POISON_KINDS)]
    account, region = scope
    missing = f"arn:aws:kms:{region}:{account}:key/{uuid.uuid4()}"
    doc = event(missing)
    if kind == "not-json":
        return kind, "{not json at all " + "x" * (n % 7)
    if kind == "resources-5":
        doc["detail"]["resources"] = 5
        doc["detail"]["requestParameters"].pop("keyId")
    elif kind == "detail-string":
        doc["detail"] = "PutKeyPolicy"
    return kind, json.dumps(doc)


# -- the daemon's process ----------------------------------------------------------------------
def proc_stats(pid: int) -> tuple[float, int, int]:
    """RSS (MB), open fds, threads of a process (Linux /proc)."""
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def is_worker(pid: int) -> bool:
    """A worker process of the scan (multiprocessing spawn), not its resource tracker."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def alive(pid: int) -> bool:
    """Running or stopped; gone or a zombie (killed, not yet joined) is not alive."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "X")
    return state not in ("Z", "X")


def talks_to(pid: int, port: int) -> bool:
    """Whether the process holds a TCP connection to 127.0.0.1:`port` (it is reading AWS)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and fields[9] in inodes:
            return True
    return False


class WorkerStopper(threading.Thread):
    """Once `armed` is set: SIGSTOP the first worker process of the daemon that is reading AWS
    (connected to the proxy), then watch how long the daemon takes to kill it."""

    def __init__(self, daemon_pid: int, proxy_port: int) -> None:
        super().__init__(daemon=True)
        self.daemon_pid, self.proxy_port = daemon_pid, proxy_port
        self.armed, self.quit = threading.Event(), threading.Event()
        self.stopped_pid: int | None = None
        self.stopped_at: float | None = None  # wall clock
        self.killed_after: float | None = None  # seconds from SIGSTOP to gone

    def run(self) -> None:
        self.armed.wait()
        while not self.quit.is_set() and self.stopped_pid is None:
            try:
                for pid in children(self.daemon_pid):
                    if is_worker(pid) and talks_to(pid, self.proxy_port):
                        os.kill(pid, signal.SIGSTOP)
                        self.stopped_pid, self.stopped_at = pid, time.time()
                        break
            except OSError:
                pass
            time.sleep(0.01)
        while self.stopped_pid is not None and not self.quit.is_set():
            if not alive(self.stopped_pid):
                assert self.stopped_at is not None
                self.killed_after = time.time() - self.stopped_at
                return
            time.sleep(0.1)


# -- /metrics ----------------------------------------------------------------------------------
def scrape(base: str) -> dict[str, dict[str, float]]:
    """name -> {labels text -> value}, of the daemon's /metrics."""
    out: dict[str, dict[str, float]] = {}
    for line in http_get(f"{base}/metrics")[1].splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        out.setdefault(name, {})[labels.rstrip("}")] = float(value)
    return out


def label(labels: str, name: str) -> str:
    part = labels.split(f'{name}="', 1)
    return part[1].split('"', 1)[0] if len(part) == 2 else ""


def total(metrics: dict[str, dict[str, float]], name: str, **want: str) -> float:
    return sum(v for k, v in metrics.get(name, {}).items() if all(label(k, n) == w for n, w in want.items()))


def by(metrics: dict[str, dict[str, float]], name: str, key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in metrics.get(name, {}).items():
        out[label(labels, key)] = out.get(label(labels, key), 0.0) + value
    return out


# -- the store at the end ----------------------------------------------------------------------
def _pairs(body: bytes, outsiders: dict[str, str]) -> tuple[frozenset[Pair], frozenset[tuple[str, str]]]:
    """A state's (key, outsider) pairs of the ground truth, and every (key, principal) finding
    but the `unknown` one an unreadable key holds until it is read again (not access; its
    clearing is the `key-readable` drift event)."""
    state = json.loads(zlib.decompress(body).decode())
    every, truth = set(), set()
    for f in state.get("findings", []):
        if f.get("access") == "unknown":
            continue
        every.add((f["key_arn"], f["principal"]))
        principal = str(f["principal"])
        account = f.get("principal_account") or (principal.split(":")[4] if principal.count(":") >= 4 else principal)
        if account in outsiders:
            truth.add((f["key_arn"], account))
    return frozenset(truth), frozenset(every)


def walk_store(path: Path, scopes: set[Scope], outsiders: dict[str, str]) -> dict[str, Any]:
    """Every snapshot in commit order, each scope's findings as `findings` shows them (a failed
    scope answers with its last good state): snapshots missing a configured scope, findings that
    were present and then absent from a later snapshot, the latest snapshot's pairs, full scans
    (every scope attempted at the snapshot's start) with their failed scopes, false removals."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    bodies: dict[str, tuple[frozenset[Pair], frozenset[tuple[str, str]]]] = {}
    good: dict[Scope, str] = {}  # the scope's last good state (digest)
    seen: dict[Scope, frozenset[tuple[str, str]]] = {}
    lost_any: set[tuple[str, str]] = set()
    incomplete: list[int] = []
    full_scans: list[tuple[int, float, list[str]]] = []
    rows = db.execute(
        "SELECT s.id, s.started_at, p.account, p.region, p.ok, p.error_code, p.state, p.attempted_at "
        "FROM snapshots s JOIN scopes p ON p.snapshot_id = s.id ORDER BY s.id"
    ).fetchall()
    snapshots: dict[int, list[Any]] = {}
    for row in rows:
        snapshots.setdefault(row[0], []).append(row)
    latest: set[Pair] = set()
    for sid, group in snapshots.items():
        named = {(r[2], r[3]) for r in group}
        if named != scopes:
            incomplete.append(sid)
        started = group[0][1]
        if all(r[7] is not None and abs(r[7] - started) < 1e-6 for r in group):
            full_scans.append((sid, started, [f"{r[2]}/{r[3]} {r[5]}" for r in group if not r[4]]))
        for _, _, account, region, ok, _, digest, _ in group:
            scope = (account, region)
            if ok and digest:
                good[scope] = digest
            digest = good.get(scope, "")
            if not digest:
                continue
            if digest not in bodies:
                (body,) = db.execute("SELECT body FROM states WHERE digest = ?", [digest]).fetchone()
                bodies[digest] = _pairs(body, outsiders)
            now = bodies[digest][1]
            lost_any |= seen.get(scope, frozenset()) - now
            seen[scope] = seen.get(scope, frozenset()) | now
        if sid == max(snapshots):
            latest = set().union(*(bodies[good[s]][0] for s in scopes if s in good))
    kinds = dict(db.execute("SELECT kind, count(*) FROM drift GROUP BY kind").fetchall())
    removed = db.execute(
        "SELECT body FROM drift WHERE kind IN ('removed', 'narrowed') ORDER BY detected_at LIMIT 5"
    ).fetchall()
    db.close()
    return {
        "snapshots": len(snapshots),
        "incomplete": incomplete,
        "lost_any": lost_any,
        "latest": latest,
        "full_scans": full_scans,
        "drift_kinds": kinds,
        "removed_examples": [json.loads(r[0]) for r in removed],
    }
