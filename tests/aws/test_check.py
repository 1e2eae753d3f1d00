"""`kmsaudit check` (issue #13): the pre-flight of a new deployment, against moto's server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from awsproxy import AwsProxy
from estate import A, B, Estate, config_text
from loopback import LocalReceiver, free_port

WRONG = "333333333333"  # configured without a role: the ambient credentials are 123456789012's


def check(config: Path, endpoint: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsaudit", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ENDPOINT_URL": endpoint, **env},
    )


def rows(out: str) -> dict[str, str]:
    """CHECK -> the rest of its line."""
    found: dict[str, str] = {}
    name = ""
    for line in out.splitlines():
        if line[:1] in ("✓", "✗"):
            mark, _, rest = line.partition(" ")
            name, _, detail = rest.strip().partition("  ")
            name = name.strip()
            found[name] = f"{mark} {detail.strip()}"
        elif line.strip().startswith("fix:") and name:
            found[name] += " " + line.strip()  # the fix, under its failure
    return found


def test_check_names_each_problem_with_its_fix(tmp_path: Path, estate: Estate, aws: str) -> None:
    refused = free_port()  # nothing listens there
    listen = free_port()
    config = tmp_path / "k.toml"
    config.write_text(
        config_text((A, B), store=str(tmp_path / "k.db"))
        + f'\n[[accounts]]\nid = "{WRONG}"\n'
        + '\n[[accounts]]\nid = "444444444444"\nrole_arn = "arn:aws:iam::444444444444:role/KmsAuditReadOnly"\n'
        + f'\n[daemon]\nlisten = "127.0.0.1:{listen}"\n'
        + '\n[[alerts]]\nname = "pager"\ntype = "webhook"\nurl_env = "CHECK_HOOK"\n'
    )
    proxy = AwsProxy(aws, deny_assume={"444444444444"})
    try:
        proc = check(config, proxy.start(), CHECK_HOOK=f"http://127.0.0.1:{refused}/hook")
    finally:
        proxy.stop()
    assert proc.returncode == 4, proc.stdout + proc.stderr
    found = rows(proc.stdout)
    for account in (A, B):
        assert found[f"account {account}: credentials"].startswith("✓"), found
        assert found[f"account {account}: identity"].startswith("✓")
        assert found[f"account {account}: kms read"].startswith("✓")
        assert found[f"account {account}: iam read"].startswith("✓")
    wrong = found[f"account {WRONG}: identity"]
    assert wrong.startswith("✗") and "123456789012" in wrong and "role_arn" in wrong
    denied = found["account 444444444444: credentials"]
    assert denied.startswith("✗") and "AssumeRole" in denied and "kmsaudit-audit-role" in denied
    assert found["alert sink pager"].startswith("✗") and "refused" in found["alert sink pager"].lower()
    assert found["store"].startswith("✓")
    assert found[f"listen 127.0.0.1:{listen}"].startswith("✓")
    assert "Traceback" not in proc.stderr


def test_check_passes_on_a_good_deployment(tmp_path: Path, estate: Estate, aws: str) -> None:
    receiver = LocalReceiver()
    port = receiver.start()
    config = tmp_path / "k.toml"
    config.write_text(
        config_text((A,), store=str(tmp_path / "k.db"))
        + f'\n[daemon]\nlisten = "127.0.0.1:{free_port()}"\n'
        + '\n[[alerts]]\nname = "pager"\ntype = "webhook"\nurl_env = "CHECK_HOOK"\n'
    )
    try:
        proc = check(config, aws, CHECK_HOOK=f"http://127.0.0.1:{port}/hook")
    finally:
        receiver.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "✗" not in proc.stdout
    assert not (tmp_path / "k.db").exists()  # a pre-flight leaves nothing behind


def test_check_reports_a_busy_listen_address_and_an_unusable_store(tmp_path: Path, estate: Estate, aws: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "k.toml"
        config.write_text(
            config_text((A,), store=str(tmp_path)) + f'\n[daemon]\nlisten = "127.0.0.1:{port}"\n'
        )  # the store path is a directory
        proc = check(config, aws)
    assert proc.returncode == 4
    found = rows(proc.stdout)
    assert found["store"].startswith("✗") and "directory" in found["store"]
    assert found[f"listen 127.0.0.1:{port}"].startswith("✗")


def test_check_covers_the_event_queue_and_the_security_hub_export(tmp_path: Path, estate: Estate, aws: str) -> None:
    """Issues #16 and #17: the new config sections are checked before the first scan — a queue
    that exists answers, one that does not names its fix; Security Hub must be enabled."""
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=aws)
    queue = sqs.create_queue(QueueName="kmsaudit-events")["QueueUrl"]
    missing = queue.replace("kmsaudit-events", "no-such-queue")
    config = tmp_path / "k.toml"
    config.write_text(
        config_text((A,), store=str(tmp_path / "k.db"))
        + f'\n[events]\nqueues = ["{queue}", "{missing}"]\nregion = "us-east-1"\n'
        + '\n[[export]]\ntype = "securityhub"\nregion = "us-east-1"\n'
        + f'\n[daemon]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    found = rows(check(config, aws).stdout)
    assert found["event queue kmsaudit-events"].startswith("✓ us-east-1: 0 messages waiting")
    assert (
        found["event queue no-such-queue"].startswith("✗")
        and "kmsaudit-events.json" in found["event queue no-such-queue"]
    )
    assert (
        found["export securityhub-us-east-1"].startswith("✗")
        and "enable Security Hub" in found["export securityhub-us-east-1"]
    )
    boto3.client("securityhub", region_name="us-east-1", endpoint_url=aws).enable_security_hub()
    proc = check(config, aws)
    found = rows(proc.stdout)
    assert found["export securityhub-us-east-1"] == "✓ findings go to the Security Hub of 123456789012 in us-east-1"
