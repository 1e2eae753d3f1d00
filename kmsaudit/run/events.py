"""Real-time detection (README "Real-time detection"): CloudTrail management events, forwarded by
EventBridge into SQS, tell the daemon what changed; it re-reads just that and records it like a
scan, so drift, alerts, `findings`, `history` and the metrics all see it within seconds.

`classify` is pure: one SQS message body (the EventBridge event) -> what to re-read:

    KMS key events (PutKeyPolicy, CreateGrant, …)  -> that key (ARN, or id in the event's
                                                     account and region)
    KMS alias events                               -> the key the alias names (or named)
    IAM policy events, Organizations policy events -> that account's IAM / the organization:
                                                     a full scan, coalesced over a burst
    failed calls (errorCode), unaudited accounts,
    other names, duplicates                        -> dropped, counted
    anything unreadable                            -> malformed, logged, deleted

The consumer deletes a message only once what it caused is committed (at least once: a crash in
between re-reads it, and the idempotent outbox and unchanged state send no second alert).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from kmsaudit.collect.api import Api
from kmsaudit.collect.session import Sessions
from kmsaudit.config.settings import Config, EventsSettings
from kmsaudit.errors import CollectError
from kmsaudit.run.receive import ReceiveHealth, queue_region, queued_by, sleep_or_stop, sqs_now

log = structlog.get_logger("kmsaudit.events")

KMS_KEY_EVENTS = frozenset(
    {
        "PutKeyPolicy",
        "CreateGrant",
        "RetireGrant",
        "RevokeGrant",
        "CreateKey",
        "ReplicateKey",
        "ScheduleKeyDeletion",
        "CancelKeyDeletion",
        "EnableKey",
        "DisableKey",
        "TagResource",
        "UntagResource",
    }
)
KMS_ALIAS_EVENTS = frozenset({"CreateAlias", "UpdateAlias", "DeleteAlias"})
IAM_EVENTS = frozenset(
    {f"{verb}{what}Policy" for verb in ("Put", "Delete") for what in ("Role", "User", "Group")}
    | {f"{verb}{what}Policy" for verb in ("Attach", "Detach") for what in ("Role", "User", "Group")}
    | {f"{verb}{what}PermissionsBoundary" for verb in ("Put", "Delete") for what in ("Role", "User")}
    | {
        "CreatePolicyVersion",
        "DeletePolicyVersion",
        "SetDefaultPolicyVersion",
        "AddUserToGroup",
        "RemoveUserFromGroup",
        "CreateRole",
        "DeleteRole",
        "CreateUser",
        "DeleteUser",
        "UpdateAssumeRolePolicy",
    }
)
ORG_EVENTS = frozenset(
    {
        "CreatePolicy",
        "UpdatePolicy",
        "DeletePolicy",
        "AttachPolicy",
        "DetachPolicy",
        "EnablePolicyType",
        "DisablePolicyType",
        "MoveAccount",
        "RemoveAccountFromOrganization",
        "AcceptHandshake",
    }
)
SOURCES = {"kms.amazonaws.com": "kms", "iam.amazonaws.com": "iam", "organizations.amazonaws.com": "organizations"}
_KEY_ARN = re.compile(r"^arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):key/([A-Za-z0-9-]+)$")
_KEY_ID = re.compile(r"^(mrk-)?[0-9a-fA-F-]{32,40}$|^mrk-[0-9a-f]{32}$")
_ACCOUNT = re.compile(r"^\d{12}$")


@dataclass(frozen=True, slots=True)
class Change:
    """What one event asks to re-read."""

    kind: str  # key | alias | iam | organization
    source: str  # kms | iam | organizations
    name: str  # the CloudTrail eventName
    event_id: str
    event_time: float  # epoch seconds (CloudTrail eventTime)
    account: str = ""
    region: str = ""
    key_arn: str = ""  # kind key
    alias: str = ""  # kind alias without a target: resolved from the last state


@dataclass(frozen=True, slots=True)
class Dropped:
    source: str
    name: str
    outcome: str  # failed-call | unaudited | ignored | duplicate | malformed
    reason: str = ""
    event_id: str = ""


def _time(text: Any) -> float:
    """The event's time; now when it gives none that reads (never in the future of now)."""
    try:
        return min(time.time(), datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp())
    except (ValueError, TypeError, OverflowError):
        return time.time()


def _key_arn(value: Any, account: str, region: str, partition: str = "aws") -> str:
    """A key ARN from an ARN or a bare key id (in the event's account and region); "" otherwise."""
    text = str(value or "")
    if _KEY_ARN.match(text):
        return text
    if _KEY_ID.match(text) and _ACCOUNT.match(account) and region:
        return f"arn:{partition}:kms:{region}:{account}:key/{text}"
    return ""


KNOWN_EVENTS = KMS_KEY_EVENTS | KMS_ALIAS_EVENTS | IAM_EVENTS | ORG_EVENTS
OTHER = "other"  # the label of every source and event name not known here (issue #24, defect 8)


def _obj(value: Any) -> dict[str, Any]:
    """An object of the event, or {} when the field holds anything else: one odd field type
    never raises (issue #24, defect 3)."""
    return value if isinstance(value, dict) else {}


def _text(value: Any, limit: int = 200) -> str:
    return value[:limit] if isinstance(value, str) else ""


def classify(body: str, audited: Collection[str] | None = None) -> Change | Dropped:
    """One SQS message body -> a Change to re-read, or why it is dropped. Never raises: whatever
    a body holds, the answer is a Change or a Dropped (`malformed` when nothing else fits).
    `audited`: the audited accounts (None: all). The source and name of either are a fixed set
    (the known ones, `other`): nothing in a body reaches a metric label."""
    try:
        return _classify(body, audited)
    except Exception as exc:  # a body no branch foresaw is malformed, never a crash
        return Dropped("unknown", "unknown", "malformed", f"unreadable event: {type(exc).__name__}: {str(exc)[:120]}")


def _classify(body: str, audited: Collection[str] | None) -> Change | Dropped:
    try:
        event = json.loads(body)
    except ValueError as exc:
        return Dropped("unknown", "unknown", "malformed", f"not an EventBridge CloudTrail event: {str(exc)[:120]}")
    detail = event.get("detail") if isinstance(event, dict) else None
    if not isinstance(detail, dict):
        return Dropped("unknown", "unknown", "malformed", "not an EventBridge CloudTrail event: no detail object")
    raw_source, raw_name = _text(detail.get("eventSource")), _text(detail.get("eventName"))
    source = SOURCES.get(raw_source, OTHER if raw_source else "unknown")
    name = raw_name if raw_name in KNOWN_EVENTS else (OTHER if raw_name else "unknown")
    event_id = _text(detail.get("eventID"), 80)
    if not raw_name or not event_id:
        return Dropped(source, name, "malformed", "no eventName or eventID")
    if detail.get("errorCode"):
        return Dropped(source, name, "failed-call", str(detail.get("errorCode"))[:80], event_id)
    account = _text(detail.get("recipientAccountId")) or _text(event.get("account"))
    region = _text(detail.get("awsRegion")) or _text(event.get("region"))
    when = _time(detail.get("eventTime") or event.get("time"))
    params = detail.get("requestParameters") or {}
    response = detail.get("responseElements") or {}
    if not isinstance(params, dict) or not isinstance(response, dict):
        return Dropped(source, name, "malformed", "requestParameters or responseElements is not an object", event_id)
    if source == "kms" and (name in KMS_KEY_EVENTS or name in KMS_ALIAS_EVENTS):
        key = ""
        if name == "CreateKey":
            meta = _obj(response.get("keyMetadata"))
            key = _key_arn(meta.get("arn") or meta.get("keyId"), account, region)
        elif name == "ReplicateKey":
            meta = _obj(response.get("replicaKeyMetadata"))
            key = _key_arn(meta.get("arn"), account, _text(params.get("replicaRegion")) or region)
        elif name in KMS_ALIAS_EVENTS:
            key = _key_arn(params.get("targetKeyId"), account, region)
        else:
            key = _key_arn(params.get("keyId"), account, region)
            resources = detail.get("resources") or event.get("resources") or []
            for resource in resources if isinstance(resources, list) else []:
                arn = resource.get("ARN") if isinstance(resource, dict) else resource
                if not key and isinstance(arn, str):
                    key = _key_arn(arn, account, region)
        if key:
            match = _KEY_ARN.match(key)
            assert match is not None
            account, region = match.group(3), match.group(2)
        if audited is not None and account not in audited:
            return Dropped(source, name, "unaudited", account, event_id)
        alias = _text(params.get("aliasName"), 300) if name in KMS_ALIAS_EVENTS else ""
        alias = alias if alias.startswith("alias/") else ""
        if key:  # an alias event names its alias too: the key it named before loses it (defect 7)
            return Change("key", source, name, event_id, when, account, region, key_arn=key, alias=alias)
        if alias:
            return Change("alias", source, name, event_id, when, account, region, alias=alias)
        return Dropped(source, name, "malformed", "no key id in the event", event_id)
    if source == "iam" and name in IAM_EVENTS:
        if audited is not None and account not in audited:
            return Dropped(source, name, "unaudited", account, event_id)
        return Change("iam", source, name, event_id, when, account, "global")
    if source == "organizations" and name in ORG_EVENTS:
        return Change("organization", source, name, event_id, when, account, "global")
    return Dropped(source, name, "ignored", "", event_id)


class Seen:
    """The event ids processed lately (CloudTrail and SQS may deliver one twice)."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Message:
    queue: str
    receipt: str
    outcome: Change | Dropped
    # Monotonic: by when the message was certainly in the queue (kmsaudit/run/receive.py), what
    # "covered" compares with a full scan's start; one made here was received now.
    queued_by: float = field(default_factory=time.monotonic)


# What the daemon does with a batch: re-reads and records the changes; returns, once committed,
# the receipts of the messages it handled. The others (a re-read that failed) stay in the queue:
# they come back after their visibility timeout, and go to its dead-letter queue in the end.
Handler = Callable[[Sequence[Message]], Awaitable[set[str]]]
EMPTY_RECEIVE_PAUSE = 1.0  # at most one ReceiveMessage a second on an empty queue (wait_seconds = 0)
RECEIVE_BACKOFF = 1.0  # after a failed receive, doubling to 60 s


class Consumer:
    """Long-polls the configured queues in the daemon's event loop, next to the scheduler."""

    def __init__(
        self,
        config: Config,
        handler: Handler,
        count: Callable[[str, str, str], None],
        received: Callable[[str], None] = lambda queue: None,
        health: Callable[[str, str | None], None] = lambda queue, down: None,
    ) -> None:
        assert config.events is not None
        self.config = config
        self.settings = config.events
        self.handler = handler
        self.count = count  # (source, event name, outcome)
        self.received = received  # (queue URL): a message was read from it
        self.health = health  # (queue URL, why it is down, or None once it reads again)
        self.seen = Seen()
        self.api = Api(config.scan)

    def audited(self) -> set[str] | None:
        if self.config.organization is not None:
            return None  # members are discovered: the handler drops what no scan knows
        return {a.id for a in self.config.accounts}

    async def poll(self, url: str, stopping: asyncio.Event) -> None:
        """One queue until `stopping` (the daemon supervises one task per queue: one queue's
        crash does not stop the others)."""
        async with Sessions(self.config.scan) as sessions:
            await self._poll(sessions, url, stopping)

    def task_names(self) -> dict[str, str]:
        """Each queue URL's task name (`events:<queue name>`), unique, from the config alone."""
        names: dict[str, str] = {}
        for url in self.settings.queues:
            base = f"events:{url.rstrip('/').rsplit('/', 1)[-1] or 'queue'}"
            name, n = base, 1
            while name in names.values():
                n += 1
                name = f"{base}#{n}"
            names[url] = name
        return names

    async def _poll(self, sessions: Sessions, url: str, stopping: asyncio.Event) -> None:
        region = queue_region(url, self.settings)
        health = ReceiveHealth(url, self.health)
        self.received(url)  # the quiet time counts from here
        while not stopping.is_set():
            asked = time.monotonic()
            try:
                session = await sessions.for_account("events", self.settings.role_arn, self.settings.external_id)
                sqs = await sessions.client(session, "sqs", region)
                response = await self.api.call(
                    sqs,
                    "events",
                    region,
                    "ReceiveMessage",
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self.settings.wait_seconds,
                    AttributeNames=["ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp"],
                )
                received = time.monotonic()
                health.succeeded()
            except CollectError as exc:
                sessions.forget("events")  # a role that could not be assumed is tried again
                self.count("sqs", "ReceiveMessage", "receive-error")
                log.error("events.receive_failed", queue=url, reason=str(exc), failures=health.failures + 1)
                health.failed(str(exc))
                await sleep_or_stop(stopping, min(60.0, RECEIVE_BACKOFF * 2.0 ** (health.failures - 1)))
                continue
            messages = []
            if response.get("Messages"):
                self.received(url)
            at_sqs = sqs_now(response)
            for raw in response.get("Messages") or []:
                outcome = classify(str(raw.get("Body", "")), self.audited())
                if isinstance(outcome, Change) and outcome.event_id in self.seen:
                    outcome = Dropped(outcome.source, outcome.name, "duplicate", "", outcome.event_id)
                queued = queued_by(raw, at_sqs, received)
                messages.append(Message(url, str(raw.get("ReceiptHandle", "")), outcome, queued))
            if not messages:
                # An empty answer at once (wait_seconds = 0, or a queue that does not long-poll)
                # is not asked again at once: at most one receive a second (defect 8).
                await sleep_or_stop(stopping, EMPTY_RECEIVE_PAUSE - (time.monotonic() - asked))
                continue
            done = [m for m in messages if isinstance(m.outcome, Dropped)]
            for m in done:
                assert isinstance(m.outcome, Dropped)
                self.count(m.outcome.source or "unknown", m.outcome.name or "unknown", m.outcome.outcome)
                if m.outcome.outcome == "malformed":
                    log.warning("events.malformed", queue=url, reason=m.outcome.reason)
            changes = [m for m in messages if isinstance(m.outcome, Change)]
            handled: set[str] = set()
            if changes:
                try:
                    handled = await self.handler(changes)
                except Exception as exc:  # the messages stay: they come back after their visibility timeout
                    log.error("events.reaudit_failed", reason=str(exc)[:300], events=len(changes))
                    for m in changes:
                        assert isinstance(m.outcome, Change)
                        self.count(m.outcome.source, m.outcome.name, "failed")
                for m in changes:
                    assert isinstance(m.outcome, Change)
                    if m.receipt in handled:
                        self.seen.add(m.outcome.event_id)
                    else:
                        log.warning("events.kept_for_retry", queue=url, name=m.outcome.name, id=m.outcome.event_id)
            gone = [m for m in done if not _keep(m, self.settings)] + [m for m in changes if m.receipt in handled]
            await self._delete(sqs, region, url, gone)

    async def _delete(self, sqs: Any, region: str, url: str, messages: Sequence[Message]) -> None:
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            try:
                await self.api.call(
                    sqs,
                    "events",
                    region,
                    "DeleteMessageBatch",
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(batch)],
                )
            except CollectError as exc:  # they come back and are processed again: no second alert
                log.warning("events.delete_failed", queue=url, reason=str(exc))


def _keep(message: Message, settings: EventsSettings) -> bool:
    """A malformed message is left to the queue's dead-letter policy when so configured."""
    return (
        isinstance(message.outcome, Dropped)
        and message.outcome.outcome == "malformed"
        and not settings.delete_malformed
    )
