"""Issue #17 end to end on moto's server: the daemon reads CloudTrail events from SQS and the
webhook gets the alert within seconds, not at the next scheduled scan (an hour away here).

The test changes AWS as a user would, then puts into the queue the EventBridge message CloudTrail
would deliver (tests/data/cloudtrail)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from estate import A, B, Estate, client, config_text, key_policy, role
from loopback import LocalReceiver, free_port, get_until, http_get, wait_for

FIXTURES = Path(__file__).parents[1] / "data" / "cloudtrail"
OUTSIDER = "555566667777"


class Webhook(LocalReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.alerts: list[dict[str, Any]] = []
        self.daemon: subprocess.Popen[str] | None = None  # the daemon it listens for

    async def _handle(self, request: web.Request) -> web.Response:
        self.alerts.append(json.loads(await request.read()))
        return web.Response(status=200)


def event(name: str, key_arn: str = "", **detail: Any) -> str:
    """The EventBridge message of a CloudTrail event, for a key of the estate, happening now."""
    body = json.loads((FIXTURES / name).read_text())
    d = body["detail"]
    d["eventID"] = str(uuid.uuid4())
    d["eventTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if key_arn:
        _, _, _, region, account, resource = key_arn.split(":")
        d.update(awsRegion=region, recipientAccountId=account)
        d["requestParameters"]["keyId"] = resource.split("/", 1)[1]  # a bare id, as PutKeyPolicy logs it
        d["resources"] = [{"accountId": account, "type": "AWS::KMS::Key", "ARN": key_arn}]
    d.update(detail)
    return json.dumps(body)


def write_config(tmp_path: Path, queue: str, listen: int) -> Path:
    """The estate's accounts, a scan an hour away, the queue, and every alert to the webhook."""
    config = tmp_path / "k.toml"
    config.write_text(
        config_text(store=str(tmp_path / "k.db")).replace('interval = "15m"', 'interval = "1h"')
        + f'\n[daemon]\nlisten = "127.0.0.1:{listen}"\n'
        + f'\n[events]\nqueues = ["{queue}"]\nregion = "us-east-1"\nwait_seconds = 1\n'
        + '\n[[alerts]]\nname = "hook"\ntype = "webhook"\nurl_env = "KMSAUDIT_TEST_HOOK"\nmin_severity = "low"\n'
    )
    return config


@pytest.fixture
def daemon(tmp_path: Path, estate: Estate, aws: str) -> Iterator[tuple[Any, Webhook, str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=aws)
    queue = sqs.create_queue(QueueName="kmsaudit-events", Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
    hook = Webhook()
    port = hook.start()
    listen = free_port()
    config = write_config(tmp_path, queue, listen)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsaudit", "daemon", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": aws, "KMSAUDIT_TEST_HOOK": f"http://127.0.0.1:{port}/hook"},
    )
    base = f"http://127.0.0.1:{listen}"
    hook.daemon = proc
    try:
        assert get_until(f"{base}/readyz", lambda s, _: s == 200)[0] == 200  # the first full scan is done
        yield sqs, hook, base, queue
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        hook.stop()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err


def _metric(base: str, outcome: str, name: str) -> float:
    text = http_get(f"{base}/metrics")[1]
    for line in text.splitlines():
        if line.startswith("kmsaudit_events_total{") and f'outcome="{outcome}"' in line and f'event="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_events_page_within_seconds_once_and_survive_bad_messages(
    daemon: tuple[Any, Webhook, str, str], estate: Estate
) -> None:
    sqs, hook, base, queue = daemon
    assert hook.alerts == []  # the first scan is a baseline
    public = estate.keys["narrowed"]
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["narrowed"],
        PolicyName="default",
        Policy=key_policy(A, {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}),
    )
    put = event("kms-PutKeyPolicy.json", public)
    started = time.monotonic()
    sqs.send_message(QueueUrl=queue, MessageBody=put)
    wait_for(lambda: any(a["principal"] == "*" for a in hook.alerts), timeout=60, what="the public key's alert")
    assert time.monotonic() - started < 60  # the next scheduled scan is an hour away
    [alert] = [a for a in hook.alerts if a["principal"] == "*"]
    assert alert["kind"] == "added" and alert["key_arn"] == public and alert["severity"] == "critical"

    # The same event delivered twice, a failed call, a malformed body: no second alert, no crash.
    sqs.send_message(QueueUrl=queue, MessageBody=put)
    sqs.send_message(QueueUrl=queue, MessageBody=event("kms-ScheduleKeyDeletion-denied.json"))
    sqs.send_message(QueueUrl=queue, MessageBody="{not json")
    wait_for(lambda: _metric(base, "malformed", "unknown") >= 1, what="the malformed message to be counted")
    wait_for(lambda: _metric(base, "duplicate", "PutKeyPolicy") >= 1, what="the duplicate to be dropped")
    assert _metric(base, "failed-call", "ScheduleKeyDeletion") == 1
    assert len([a for a in hook.alerts if a["principal"] == "*"]) == 1
    assert http_get(f"{base}/healthz")[0] == 200

    # Issue #24, defect 3: well-formed JSON with one odd field type ended the consumer task,
    # silently (no log, /readyz 200, no later event read). Each is counted malformed and deleted.
    odd_resources = json.loads(put)
    odd_resources["detail"].update(eventID=str(uuid.uuid4()), resources=5)
    odd_metadata = json.loads(event("kms-CreateKey.json", recipientAccountId=A, awsRegion="us-east-1"))
    odd_metadata["detail"]["responseElements"] = {"keyMetadata": "x"}
    for odd in (odd_resources, odd_metadata, [1, 2], {"detail": {"eventName": ["PutKeyPolicy"]}}):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(odd))
    wait_for(lambda: _metric(base, "malformed", "unknown") == 3, what="the odd messages to be counted malformed")
    wait_for(lambda: _metric(base, "malformed", "CreateKey") == 1, what="the odd CreateKey to be counted")
    wait_for(lambda: _metric(base, "reaudited", "PutKeyPolicy") == 2, what="the odd-resources event re-read")
    # (its requestParameters name the key: re-read, as the first one)
    assert http_get(f"{base}/readyz")[0] == 200  # the consumer is up: no task is down
    assert 'kmsaudit_task_up{task="events:kmsaudit-events"} 1.0' in http_get(f"{base}/metrics")[1]

    # A grant to a role outside the estate: its alert too, from one key's reads.
    grant = client("kms", A).create_grant(
        KeyId=estate.ids["granted"], GranteePrincipal=f"arn:aws:iam::{OUTSIDER}:role/Intruder", Operations=["Decrypt"]
    )
    assert grant["GrantId"]
    created = event("kms-CreateGrant.json", estate.keys["granted"])
    sqs.send_message(QueueUrl=queue, MessageBody=created)
    wait_for(
        lambda: any(a["principal"].endswith(":role/Intruder") for a in hook.alerts), timeout=60, what="the grant alert"
    )
    # Every message is gone from the queue once handled (deleted after the snapshot committed).
    wait_for(
        lambda: (
            int(
                sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"][
                    "ApproximateNumberOfMessages"
                ]
            )
            + int(
                sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"][
                    "ApproximateNumberOfMessagesNotVisible"
                ]
            )
            == 0
        ),
        what="the queue to be empty",
    )
    assert _metric(base, "reaudited", "CreateGrant") == 1
    # PutKeyPolicy, the odd-resources PutKeyPolicy (its requestParameters name the key), CreateGrant
    assert "kmsaudit_event_to_alert_seconds_count 3.0" in http_get(f"{base}/metrics")[1]


def _requests(base: str, operation: str) -> float:
    text = http_get(f"{base}/metrics")[1]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kmsaudit_aws_requests_total{") and f'operation="{operation}"' in line
    )


def test_an_iam_change_makes_potential_access_effective_and_a_burst_reads_iam_once(
    daemon: tuple[Any, Webhook, str, str], estate: Estate
) -> None:
    """PutRolePolicy gives B's NoPerm role kms:Decrypt: the key that trusts B's root is now
    effectively usable by it. 200 such events (CloudTrail delivers them seconds after they
    happened) cost one more reading of IAM, not 200."""
    sqs, hook, base, queue = daemon
    reads = _requests(base, "GetAccountAuthorizationDetails")
    assert reads > 0
    client("iam", B).put_role_policy(
        RoleName="NoPerm",
        PolicyName="kms",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}
        ),
    )
    changed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # after the first scan read IAM
    time.sleep(4)  # CloudTrail delivers seconds (to minutes) after the call: the burst arrives late
    assert hook.daemon is not None
    # The whole burst is in the queue before the daemon reads its first message ("covered" is
    # SQS's time in the queue on the daemon's monotonic clock, never eventTime: a message sent
    # after the burst's scan started is not in it): the daemon is stopped while it is sent.
    hook.daemon.send_signal(signal.SIGSTOP)
    for start in range(0, 200, 10):
        sqs.send_message_batch(
            QueueUrl=queue,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": event(
                        "iam-PutRolePolicy.json",
                        recipientAccountId=B,
                        eventTime=changed,
                        requestParameters={"roleName": "NoPerm"},
                    ),
                }
                for i in range(start, start + 10)
            ],
        )
    time.sleep(2.5)  # longer than reaudit.MARGIN: the burst has waited in the queue
    hook.daemon.send_signal(signal.SIGCONT)

    def on_shared() -> bool:  # the alerts of one scan arrive one after the other: wait for this one
        return any(a["principal"] == role(B, "NoPerm") and a["key_arn"] == estate.keys["shared"] for a in hook.alerts)

    wait_for(on_shared, timeout=90, what="the effective-access alert on the key that trusts B's root")
    alerts = {a["key_arn"]: a for a in hook.alerts if a["principal"] == role(B, "NoPerm")}
    assert alerts[estate.keys["shared"]]["kind"] == "added"  # the key that trusts B's root
    assert all(a["after"]["access"] == "effective" for a in alerts.values())
    wait_for(
        lambda: _metric(base, "covered", "PutRolePolicy") + _metric(base, "full-scan", "PutRolePolicy") == 200,
        timeout=90,
        what="every event of the burst to be handled",
    )
    assert _requests(base, "GetAccountAuthorizationDetails") == 2 * reads  # IAM read once more, for all 200


def test_killed_after_the_snapshot_before_the_delete_the_event_is_read_again_without_a_second_alert(
    tmp_path: Path, estate: Estate, aws: str
) -> None:
    """At least once: the message is deleted only after the snapshot committed. SIGKILL in
    between; the next daemon reads the message again, re-reads the key, finds nothing new."""
    from awsproxy import AwsProxy

    proxy = AwsProxy(aws)
    url = proxy.start()
    proxy.stall = {"DeleteMessageBatch": 3600.0}
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=aws)
    queue = sqs.create_queue(QueueName="kmsaudit-kill", Attributes={"VisibilityTimeout": "3"})["QueueUrl"]
    hook = Webhook()
    port = hook.start()
    listen = free_port()
    config = write_config(tmp_path, queue, listen)
    env = {**os.environ, "AWS_ENDPOINT_URL": url, "KMSAUDIT_TEST_HOOK": f"http://127.0.0.1:{port}/hook"}

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kmsaudit", "daemon", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert get_until(f"http://127.0.0.1:{listen}/readyz", lambda s, _: s == 200)[0] == 200
        return proc

    first = start()
    try:
        client("kms", A, "eu-west-1").put_key_policy(
            KeyId=estate.ids["narrowed"],
            PolicyName="default",
            Policy=key_policy(A, {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}),
        )
        sqs.send_message(QueueUrl=queue, MessageBody=event("kms-PutKeyPolicy.json", estate.keys["narrowed"]))
        wait_for(lambda: any(a["principal"] == "*" for a in hook.alerts), what="the alert")
        wait_for(lambda: "DeleteMessageBatch" in proxy.stalled, what="the delete to be under way")
        first.send_signal(signal.SIGKILL)  # the snapshot is committed, the message not deleted
        first.wait(timeout=30)
        proxy.stall = {}
        second = start()
        try:
            wait_for(
                lambda: sum(1 for op in proxy.operations if op[1] == "DeleteMessageBatch") >= 1,
                what="the message to be read again and deleted",
            )
            time.sleep(1)  # any alert it would (wrongly) send goes out right after the snapshot
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=60)
        assert second.returncode == 0
    finally:
        if first.poll() is None:
            first.kill()
        hook.stop()
        proxy.stop()
    assert [a["kind"] for a in hook.alerts if a["principal"] == "*"] == ["added"]  # once, not twice
