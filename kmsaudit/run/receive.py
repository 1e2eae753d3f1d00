"""What one ReceiveMessage answer tells the consumer beyond its bodies (kmsaudit/run/events.py):
by when, on this process's monotonic clock, each message was certainly in the queue (what
"covered" compares with a full scan's start), and whether the queue can be read at all (a
consumer whose receives keep failing is shown down, not left looking up).

"Covered" never trusts a clock that can be wrong about this process. CloudTrail's `eventTime`
may be hours from the local clock, and the local wall clock may be stepped; but SQS stamps a
message with its own clock when it is sent (`SentTimestamp`), and answers with the same clock
(`ApproximateFirstReceiveTimestamp`, the HTTP `Date` header). So SQS itself says how long a
message had been waiting when it reached us, and the monotonic clock says when that was: the
event happened before `received - waited`. Every reading errs on the late side (a `Date` is
truncated to the second, a first receive may be older than this one), so the bound is never
early; without the attributes, the message counts as queued when it was received.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import structlog

from kmsaudit.config.settings import EventsSettings

log = structlog.get_logger("kmsaudit.events")

# ReceiveMessage failures in a row after which the queue's consumer is shown down
# (`kmsaudit_task_up` 0, /readyz 503) until a receive succeeds again.
DOWN_AFTER_FAILURES = 5


def _millis(value: Any) -> float | None:
    try:
        return int(str(value)) / 1000.0
    except (TypeError, ValueError):
        return None


def sqs_now(response: Mapping[str, Any]) -> float | None:
    """A time SQS's clock had certainly reached when it answered: its `Date` header (to the
    second, so never late) and the first-receive stamps of the messages in the answer."""
    candidates: list[float] = []
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    date = headers.get("date") if isinstance(headers, Mapping) else None
    if isinstance(date, str):
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            candidates.append(parsedate_to_datetime(date).timestamp())
    for raw in response.get("Messages") or []:
        attributes = raw.get("Attributes") if isinstance(raw, Mapping) else None
        first = _millis(attributes.get("ApproximateFirstReceiveTimestamp")) if isinstance(attributes, Mapping) else None
        if first is not None:
            candidates.append(first)
    return max(candidates) if candidates else None


def queued_by(raw: Mapping[str, Any], now_at_sqs: float | None, received: float) -> float:
    """The monotonic time by which the message was certainly in the queue: `received` (the
    monotonic time the answer was read) less how long SQS says it had waited."""
    attributes = raw.get("Attributes")
    sent = _millis(attributes.get("SentTimestamp")) if isinstance(attributes, Mapping) else None
    if sent is None or now_at_sqs is None:
        return received
    return received - max(0.0, now_at_sqs - sent)


class ReceiveHealth:
    """Consecutive failed receives of one queue. After DOWN_AFTER_FAILURES the consumer reports
    itself down (once, with an error log); the first receive that succeeds reports it up."""

    def __init__(self, queue: str, report: Any) -> None:
        self.queue = queue
        self.report = report  # (queue URL, reason or None when up again)
        self.failures = 0
        self.down = False

    def failed(self, reason: str) -> None:
        self.failures += 1
        if not self.down and self.failures >= DOWN_AFTER_FAILURES:
            self.down = True
            log.error("events.consumer_down", queue=self.queue, failures=self.failures, reason=reason)
            self.report(self.queue, f"ReceiveMessage failed {self.failures} times in a row: {reason}"[:300])

    def succeeded(self) -> None:
        if self.down:
            log.info("events.consumer_recovered", queue=self.queue, after_failures=self.failures)
            self.report(self.queue, None)
        self.failures, self.down = 0, False


def queue_region(url: str, settings: EventsSettings) -> str:
    match = re.match(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com", url)
    return match.group(1) if match else settings.region


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
