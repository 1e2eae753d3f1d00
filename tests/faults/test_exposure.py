"""Secrets and exposure (issue #7, point 4).

Session tokens, secret keys, webhook URLs and HMAC keys never appear in logs (structlog's
LogCapture), error messages, metrics or the database; the database (with its outbox) is 0600;
the metrics endpoint listens on loopback unless told otherwise; the audit role can write nothing.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from estate import A, C, Estate, client, config_text, key_policy
from faultproxy import FaultProxy, Plan, Rule
from loopback import LocalReceiver, http_get, wait_for
from prometheus_client import generate_latest
from structlog.testing import capture_logs
from synthetic import scan

from kmsaudit.config.settings import load_config
from kmsaudit.delivery.alerts import build_sinks
from kmsaudit.metrics import Metrics
from kmsaudit.run.scan import scan_and_record
from kmsaudit.store.database import Store

REPO = Path(__file__).resolve().parents[2]
AMBIENT_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETKEY"
AMBIENT_TOKEN = "IQoJb3JpZ2luX2VjEambientSESSIONtokenFwoGZXIvYXdzEP"
HOOK_PATH = "services/T0SECRET1/B0SECRET2/xoxbSecretPathToken"
HMAC_KEY = "hmac-key-that-must-stay-secret"
EXTERNAL_ID = "external-id-shared-with-the-audited-accounts"


class LeakyReceiver(LocalReceiver):
    """A webhook that fails with a body echoing the secret URL it was called on (as some do)."""

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text=f"no route for {request.url}")


def _database_text(path: Path) -> str:
    """Every value in every table, compressed states unpacked: what a stolen file would show."""
    db = sqlite3.connect(path)
    out: list[str] = []
    try:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in db.execute(f'SELECT * FROM "{table}"').fetchall():
                for value in row:
                    if isinstance(value, bytes):
                        try:
                            value = zlib.decompress(value).decode()
                        except (zlib.error, UnicodeDecodeError):
                            value = value.decode("latin-1")
                    out.append(str(value))
    finally:
        db.close()
    return "\n".join(out)


ALERTS = """
[[alerts]]
name = "leaky"
type = "webhook"
url_env = "KMSAUDIT_TEST_LEAKY_URL"
hmac_secret_env = "KMSAUDIT_TEST_HMAC"
min_severity = "low"

[[alerts]]
name = "down"
type = "slack"
url_env = "KMSAUDIT_TEST_DOWN_URL"
min_severity = "low"
"""


async def test_no_secret_reaches_logs_errors_metrics_or_the_database(
    tmp_path: Path, estate: Estate, aws: str, monkeypatch: pytest.MonkeyPatch, report: Any
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AMBIENT_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AMBIENT_TOKEN)
    receiver = LeakyReceiver()
    leaky_url = f"http://127.0.0.1:{receiver.start()}/{HOOK_PATH}"
    monkeypatch.setenv("KMSAUDIT_TEST_LEAKY_URL", leaky_url)
    monkeypatch.setenv("KMSAUDIT_TEST_DOWN_URL", f"http://127.0.0.1:9/{HOOK_PATH}/down")  # nothing listens on 9
    monkeypatch.setenv("KMSAUDIT_TEST_HMAC", HMAC_KEY)
    # Failures on the way, whose messages could carry what they should not: C cannot be
    # assumed, one operation answers 503 until retries give up, and 30 % are throttled.
    plan = Plan(
        rates={"throttle": 0.3},
        max_consecutive=2,
        persistent=[
            Rule("503", lambda s, op, acct, reg, p: op == "AssumeRole" and f"::{C}:" in p.get("RoleArn", "")),
            Rule("reset", lambda s, op, acct, reg, p: op == "ListAliases" and reg == "eu-west-1"),
        ],
    )
    proxy = FaultProxy(aws, plan)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.start())
    path = tmp_path / "k.toml"
    db = tmp_path / "k.db"
    text = config_text(store=str(db), extra="max_attempts = 3\nread_timeout = 2") + ALERTS
    text = text.replace('/KmsAuditReadOnly"', f'/KmsAuditReadOnly"\nexternal_id = "{EXTERNAL_ID}"')
    path.write_text(text)
    config = load_config(path)
    assert {a.external_id for a in config.accounts} == {EXTERNAL_ID}
    metrics = Metrics()
    try:
        with capture_logs() as logs:
            first = await scan_and_record(config, build_sinks(config.alerts), metrics=metrics)
            client("kms", A).put_key_policy(
                KeyId=estate.ids["shared"],
                PolicyName="default",
                Policy=key_policy(
                    A,
                    {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"},
                ),
            )
            second = await scan_and_record(config, build_sinks(config.alerts), metrics=metrics)
    finally:
        proxy.stop()
        receiver.stop()

    secrets = {AMBIENT_SECRET, AMBIENT_TOKEN, HOOK_PATH, leaky_url, HMAC_KEY, EXTERNAL_ID, *proxy.secrets_issued}
    assert len(proxy.secrets_issued) >= 4  # a secret key and a token for each assumed account
    # The failures really happened, and were said:
    assert second.events and second.pending_alerts > 0
    assert {(s.account, s.error_code) for s in second.result.failed_scopes} >= {(C, "aws-error")}
    assert any(e["event"] == "alert.failed" for e in logs)

    places = {
        "logs": "\n".join(repr(entry) for entry in logs),
        "errors": "\n".join(
            [s.error for r in (first, second) for s in r.result.scopes]
            + [str(v) for r in (first, second) for v in r.result.iam_failures.values()]
        ),
        "metrics": generate_latest(metrics.registry).decode(),
        "database": _database_text(db),
    }
    for place, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret reached the {place}"
    report.add(secret_places_checked=len(places) * len(secrets), secrets_leaked=0)


def test_the_command_line_shows_no_secret_either(tmp_path: Path, estate: Estate, aws: str) -> None:
    """The real process, JSON logs on, an account that cannot be assumed and a sink that is down."""
    path = tmp_path / "k.toml"
    path.write_text(config_text(store=str(tmp_path / "k.db")) + ALERTS)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": aws,
        "AWS_SECRET_ACCESS_KEY": AMBIENT_SECRET,
        "AWS_SESSION_TOKEN": AMBIENT_TOKEN,
        "KMSAUDIT_TEST_LEAKY_URL": f"http://127.0.0.1:9/{HOOK_PATH}",
        "KMSAUDIT_TEST_DOWN_URL": f"http://127.0.0.1:9/{HOOK_PATH}/down",
        "KMSAUDIT_TEST_HMAC": HMAC_KEY,
    }
    for args in (["scan", "--log-format", "json"], ["scan", "--log-format", "json"], ["drift", "--format", "json"]):
        done = subprocess.run(
            [sys.executable, "-m", "kmsaudit", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        for secret in (AMBIENT_SECRET, AMBIENT_TOKEN, HOOK_PATH, HMAC_KEY):
            assert secret not in done.stdout + done.stderr
    # A Pushgateway URL with credentials, unreachable: the failure is said without them.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kmsaudit",
            "scan",
            "--config",
            str(path),
            "--pushgateway",
            f"http://ops:{HMAC_KEY}@127.0.0.1:9/x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "kmsaudit: error: metrics not exported: --pushgateway http://127.0.0.1:9: " in done.stderr
    assert HMAC_KEY not in done.stdout + done.stderr and done.returncode == 4  # as a textfile failure (issue #25)
    # A missing secret is named by its variable, never by a value:
    env.pop("KMSAUDIT_TEST_HMAC")
    done = subprocess.run(
        [sys.executable, "-m", "kmsaudit", "scan", "--config", str(path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and "$KMSAUDIT_TEST_HMAC" in done.stderr and HOOK_PATH not in done.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_database_and_its_outbox_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a permissive umask must not matter
    try:
        (tmp_path / "state").mkdir()  # a store's folder is never created for it (issue #25)
        store = Store(tmp_path / "state" / "k.db")
        store.save_scan(scan(3))
        store.save_scan(scan(3, extra_principal="arn:aws:iam::999988887777:root"), route=lambda event: ["hook"])
        assert store.pending_alerts() > 0  # the outbox lives in this very file
        for suffix in ("", "-wal", "-shm"):
            assert _mode(Path(f"{store.path}{suffix}")) == 0o600, suffix
        store.close()

        # A database left world-readable (by hand, or by a copy) is closed up when opened.
        loose = tmp_path / "loose.db"
        Store(loose).close()
        os.chmod(loose, 0o644)
        with capture_logs() as logs:
            Store(loose).close()
        assert _mode(loose) == 0o600
        assert [e["event"] for e in logs] == ["store.permissions_tightened"]
    finally:
        os.umask(old_umask)


def _listening(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        table = Path(f"/proc/net/{name}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            local, _, state = line.split()[1], line.split()[2], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_metrics_endpoint_listens_on_loopback_unless_configured(tmp_path: Path, estate: Estate, aws: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(config_text(store=str(tmp_path / "k.db")))  # no [daemon]: the default listen address
    default_port = int(load_config(config).daemon.listen.rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsaudit", "daemon", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AWS_ENDPOINT_URL": aws},
    )
    try:
        wait_for(lambda: _listening(default_port) or proc.poll() is not None, what="the daemon to listen")
        assert _listening(default_port) == {"0100007F"}  # 127.0.0.1 only: not 0.0.0.0, not ::
        assert http_get(f"http://127.0.0.1:{default_port}/healthz") == (200, "ok\n")
    finally:
        proc.terminate()
        proc.wait(30)


WRITE_VERBS = re.compile(
    r"^(Create|Put|Update|Delete|Schedule|Cancel|Enable|Disable|Tag|Untag|Retire|Revoke|Import"
    r"|Replicate|Rotate|Attach|Detach|Set|Add|Remove|Encrypt|Decrypt|ReEncrypt|Generate|Sign"
    r"|Verify|Connect|Update|Upload|Pass|Invite|Accept|Leave|Move|Register)"
)


def _actions(statements: list[dict[str, Any]]) -> list[str]:
    out = []
    for statement in statements:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        actions = statement["Action"]
        out.extend([actions] if isinstance(actions, str) else actions)
    return out


def test_the_audit_role_can_write_nothing() -> None:
    policy = json.loads((REPO / "deploy" / "iam" / "kmsaudit-readonly.json").read_text())
    template = json.loads((REPO / "deploy" / "cloudformation" / "kmsaudit-audit-role-stackset.json").read_text())
    inline = template["Resources"]["KmsAuditReadOnlyRole"]["Properties"]["Policies"]
    actions = _actions(policy["Statement"]) + [a for p in inline for a in _actions(p["PolicyDocument"]["Statement"])]
    assert actions
    for action in actions:
        service, _, name = action.partition(":")
        assert "*" not in action and "?" not in action, action  # no wildcard can grow into a write
        assert re.fullmatch(r"(List|Get|Describe)[A-Za-z]+", name) and not WRITE_VERBS.match(name), action
        assert service in ("kms", "iam", "organizations"), action
