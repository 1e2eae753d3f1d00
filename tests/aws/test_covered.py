"""Issue #24, "covered": an event is covered only by a full scan that read its scope after it.
"After" was CloudTrail's `eventTime` against the daemon's wall clock, so a clock hours ahead of
CloudTrail's (or an `eventTime` hours behind) counted a change made after the scan as in it: the
message was deleted, the change never read, never alerted. It is now decided by SQS's own stamps
on the daemon's monotonic clock (kmsaudit/run/receive.py), whatever `eventTime` says.

The daemon's code runs in-process (`Daemon.scan_once`, the real `Consumer` long-polling moto's
SQS, `Daemon.reaudit` as its handler) against moto's server through tests/awsproxy.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from awsproxy import AwsProxy
from estate import A, Estate, client, config_text, key_policy
from test_events import event

from kmsaudit.config.settings import load_config
from kmsaudit.run.daemon import Daemon
from kmsaudit.run.events import Consumer
from kmsaudit.run.reaudit import MARGIN
from kmsaudit.store.database import Store

HOURS = 3 * 3600.0


@pytest.fixture
def queue(aws: str) -> tuple[object, str]:
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=aws)
    return sqs, sqs.create_queue(QueueName="kmsaudit-covered")["QueueUrl"]


@pytest.fixture
async def daemon(tmp_path: Path, estate: Estate, proxy: AwsProxy, queue: tuple[object, str]) -> AsyncIterator[Daemon]:
    path = tmp_path / "k.toml"
    path.write_text(
        config_text(store=str(tmp_path / "k.db"))
        + f'\n[events]\nqueues = ["{queue[1]}"]\nregion = "us-east-1"\nwait_seconds = 1\n'
    )
    d = Daemon(path, load_config(path))
    yield d
    if d.event_sessions is not None:
        await d.event_sessions.sessions.__aexit__(None, None, None)


def outcome(daemon: Daemon, name: str) -> float:
    value = daemon.metrics.registry.get_sample_value(
        "kmsaudit_events_total", {"source": "kms", "event": "PutKeyPolicy", "outcome": name}
    )
    return value or 0.0


async def consume(daemon: Daemon, url: str, until: Callable[[], bool]) -> None:
    """The daemon's consumer on the queue, its re-reads as the handler, until `until()`."""
    stopping = asyncio.Event()
    consumer = Consumer(daemon.config, daemon.reaudit, daemon.metrics.count_event)
    task = asyncio.create_task(consumer.poll(url, stopping))
    try:
        for _ in range(600):
            if until() or task.done():
                break
            await asyncio.sleep(0.1)
        assert until(), "the message was not handled"
    finally:
        stopping.set()
        await task


def make_public(estate: Estate) -> None:
    client("kms", A, "eu-west-1").put_key_policy(
        KeyId=estate.ids["narrowed"],
        PolicyName="default",
        Policy=key_policy(A, {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}),
    )


def skewed(estate: Estate, offset: float) -> str:
    """The change's CloudTrail event, its eventTime `offset` seconds from the local clock."""
    when = datetime.fromtimestamp(time.time() + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return event("kms-PutKeyPolicy.json", estate.keys["narrowed"], eventTime=when)


def public_finding(daemon: Daemon, estate: Estate) -> bool:
    store = Store(daemon.config.store.path, create=False)
    try:
        return any(
            f["key_arn"] == estate.keys["narrowed"] and f["principal"] == "*" and f["access"] == "public"
            for f in store.findings()
        )
    finally:
        store.close()


@pytest.mark.parametrize("offset", [-HOURS, HOURS], ids=["event-time-hours-behind", "event-time-hours-ahead"])
async def test_a_change_after_the_scan_is_re_read_whatever_its_event_time_says(
    daemon: Daemon, estate: Estate, queue: tuple[object, str], offset: float
) -> None:
    """The change is made after the full scan; its eventTime says three hours before (the
    daemon's clock ahead of CloudTrail's: main counted it covered and deleted it, the public key
    never alerted) or three hours after. Either way it is re-read."""
    sqs, url = queue
    await daemon.scan_once()
    assert not public_finding(daemon, estate)
    make_public(estate)
    sqs.send_message(QueueUrl=url, MessageBody=skewed(estate, offset))  # type: ignore[attr-defined]
    await consume(daemon, url, lambda: outcome(daemon, "reaudited") + outcome(daemon, "covered") >= 1)
    assert outcome(daemon, "covered") == 0
    assert outcome(daemon, "reaudited") == 1
    assert public_finding(daemon, estate)
    store = Store(daemon.config.store.path, create=False)
    try:
        added = [e for e in store.drift(0) if e["kind"] == "added" and e["principal"] == "*"]
    finally:
        store.close()
    assert [e["key_arn"] for e in added] == [estate.keys["narrowed"]]  # alerted


@pytest.mark.parametrize("offset", [-HOURS, HOURS], ids=["event-time-hours-behind", "event-time-hours-ahead"])
async def test_a_message_queued_before_the_scan_started_is_covered_whatever_its_event_time_says(
    daemon: Daemon, estate: Estate, queue: tuple[object, str], offset: float
) -> None:
    """The converse, so that "covered" is not merely never: a change whose message was in the
    queue before the full scan started is in that scan (the backlog a daemon finds at its start,
    a burst of IAM events) and is not read again, even with an eventTime hours in the future
    (main re-read it: eventTime was clamped to its own clock's now, after the scan)."""
    sqs, url = queue
    make_public(estate)
    sqs.send_message(QueueUrl=url, MessageBody=skewed(estate, offset))  # type: ignore[attr-defined]
    await asyncio.sleep(MARGIN + 1.0)  # the message waits in the queue; then the scan starts
    await daemon.scan_once()
    assert public_finding(daemon, estate)
    await consume(daemon, url, lambda: outcome(daemon, "reaudited") + outcome(daemon, "covered") >= 1)
    assert outcome(daemon, "covered") == 1
    assert outcome(daemon, "reaudited") == 0
    attributes = sqs.get_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert json.dumps(attributes) == json.dumps(
        {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    )  # handled: deleted


async def test_an_empty_queue_with_wait_seconds_zero_is_asked_at_most_once_a_second(
    tmp_path: Path, estate: Estate, proxy: AwsProxy, queue: tuple[object, str]
) -> None:
    # Issue #24 defect 8: `events.wait_seconds = 0` spun (~100 ReceiveMessage/s on an empty queue).
    # The count is bounded by the time it ran: a slow machine asks less, never more.
    path = tmp_path / "k.toml"
    path.write_text(
        config_text(store=str(tmp_path / "k.db"))
        + f'\n[events]\nqueues = ["{queue[1]}"]\nregion = "us-east-1"\nwait_seconds = 0\n'
    )
    d = Daemon(path, load_config(path))
    stopping = asyncio.Event()
    consumer = Consumer(d.config, d.reaudit, d.metrics.count_event)
    started = time.monotonic()
    task = asyncio.create_task(consumer.poll(queue[1], stopping))
    await asyncio.sleep(3.0)
    stopping.set()
    await task
    elapsed = time.monotonic() - started
    asked = sum(1 for _, op in proxy.operations if op == "ReceiveMessage")
    assert 1 <= asked <= elapsed + 2, (asked, elapsed)


async def test_a_failed_re_read_from_the_queue_stays_for_a_retry_and_the_consumer_polls_on(
    daemon: Daemon, estate: Estate, proxy: AwsProxy, queue: tuple[object, str]
) -> None:
    """Found by the events soak (bench/soak_events.py): the consumer logged a message kept for a
    retry with an `event=` keyword, structlog's own first argument: TypeError, the consumer task
    crashed with the batch undeleted (the supervisor restarting it with a growing backoff), so
    one failed re-read stopped real-time detection for a while each time. Now the message stays,
    the consumer polls on, and the retry after the visibility timeout reads the change."""
    sqs, url = queue
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1"})  # type: ignore[attr-defined]
    await daemon.scan_once()
    make_public(estate)
    proxy.deny_key_policy = {estate.ids["narrowed"]}  # the re-read cannot read the changed key
    sqs.send_message(QueueUrl=url, MessageBody=skewed(estate, 0))  # type: ignore[attr-defined]
    stopping = asyncio.Event()
    consumer = Consumer(daemon.config, daemon.reaudit, daemon.metrics.count_event)
    task = asyncio.create_task(consumer.poll(url, stopping))

    async def until(done: Callable[[], bool]) -> None:
        for _ in range(300):
            if done() or task.done():
                return
            await asyncio.sleep(0.1)

    try:
        await until(lambda: outcome(daemon, "failed") >= 1)
        assert outcome(daemon, "failed") >= 1 and not public_finding(daemon, estate)
        await asyncio.sleep(0.5)
        assert not task.done(), "the consumer must outlive a message kept for a retry"
        proxy.deny_key_policy = set()
        await until(lambda: outcome(daemon, "reaudited") >= 1)
        assert not task.done()
        assert outcome(daemon, "reaudited") == 1 and public_finding(daemon, estate)
    finally:
        stopping.set()
        await task
