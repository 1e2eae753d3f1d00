"""Alerts: sinks behind one interface, fed from the durable outbox (SPEC §5, issue #4).

Every drift event is logged (always). Events at or above a sink's threshold are enqueued in the
outbox in the same transaction as the snapshot, then delivered at least once, with retries and
backoff, under a stable idempotency key (the event id), surviving restarts and sink downtime.
Secrets (webhook URLs, HMAC keys) come from environment variables and are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from kmsaudit.config.settings import AlertSinkSettings
from kmsaudit.delivery.why import explain_events
from kmsaudit.errors import AlertError, ConfigError
from kmsaudit.model import DriftEvent, severity_rank
from kmsaudit.store.database import Store

log = structlog.get_logger("kmsaudit.alert")
MAX_BACKOFF_SECONDS = 3600.0
SEND_TIMEOUT_SECONDS = 10.0


def is_accepted(event: DriftEvent) -> bool:
    """An event about accepted access (README "Accepting known access"): stored, never alerted,
    never counted for --fail-on. An `acceptance-expired` event is about access no longer accepted."""
    finding = event.after if isinstance(event.after, dict) else event.before
    return isinstance(finding, dict) and bool(finding.get("accepted"))


def _summary(event: dict[str, Any]) -> str:
    where = event.get("key_arn") or f"{event.get('account')}/{event.get('region')}"
    who = f" {event['principal']}" if event.get("principal") else ""
    return f"kmsaudit {event['severity']}: {event['kind']} {where}{who}"


class HttpSink:
    """A generic JSON webhook; the base of the Slack and Alertmanager formats."""

    def __init__(self, settings: AlertSinkSettings) -> None:
        self.name = settings.name
        self.min_severity = settings.min_severity
        self.on_baseline = settings.on_baseline
        url = os.environ.get(settings.url_env, "")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"alerts.{settings.name}: ${settings.url_env} must hold an http(s) URL")
        self._url = url
        self._secret = os.environ.get(settings.hmac_secret_env, "").encode() if settings.hmac_secret_env else b""
        if settings.hmac_secret_env and not self._secret:
            raise ConfigError(f"alerts.{settings.name}: ${settings.hmac_secret_env} is empty")

    def __repr__(self) -> str:  # never the URL: it is a secret
        return f"{type(self).__name__}({self.name!r})"

    def wants(self, event: DriftEvent) -> bool:
        return not is_accepted(event) and severity_rank(event.severity) >= severity_rank(self.min_severity)

    def body(self, event: dict[str, Any]) -> Any:
        return event

    async def send(
        self, session: aiohttp.ClientSession, event: dict[str, Any], timeout: float = SEND_TIMEOUT_SECONDS
    ) -> None:
        data = json.dumps(self.body(event), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": str(event["id"]), "User-Agent": "kmsaudit"}
        if self._secret:
            digest = hmac.new(self._secret, data, hashlib.sha256).hexdigest()
            headers["X-Kmsaudit-Signature"] = f"sha256={digest}"
        try:
            # Never follow a redirect: aiohttp would turn the POST into a bodiless GET, and an SSO
            # proxy's login page would answer 200 for an alert nobody received (issue #19).
            async with session.post(
                self._url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                if 300 <= response.status < 400:
                    raise AlertError(
                        f"{self.name}: redirected (HTTP {response.status}): a sink must answer 2xx at the URL given"
                    )
                if response.status >= 300:
                    raise AlertError(f"{self.name}: HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AlertError(f"{self.name}: {type(exc).__name__}") from None  # no URL in the message

    async def probe(self, session: aiohttp.ClientSession) -> str:
        """A dry request for `kmsaudit check`: any HTTP answer means the sink is reachable (a HEAD
        sends no alert). The URL is a secret and is never part of the answer."""
        try:
            async with session.head(
                self._url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_SECONDS)
            ) as response:
                return f"reachable (HTTP {response.status} to a HEAD request)"
        except aiohttp.ClientConnectorError as exc:
            raise AlertError(f"{self.name}: connection refused or unreachable ({type(exc).__name__})") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AlertError(f"{self.name}: {type(exc).__name__}") from None


class SlackSink(HttpSink):
    """Slack incoming-webhook format."""

    def body(self, event: dict[str, Any]) -> Any:
        after = event.get("after") if isinstance(event.get("after"), dict) else {}
        actions = ", ".join(after.get("actions", [])) if after else ""
        text = _summary(event) + (f"\nactions: {actions}" if actions else "")
        if after and after.get("outgrew"):
            text += f"\nbeyond acceptance entry {after['outgrew']}"
        if event.get("why"):
            text += f"\nwhy: {event['why']}"
        fix = event.get("remediation")
        if isinstance(fix, dict) and fix.get("summary"):
            text += f"\nfix ({'verified' if fix.get('verified') else 'not verified'}): {fix['summary']}"
        return {"text": text}


class AlertmanagerSink(HttpSink):
    """Alertmanager's v2 API: labels for routing (no ARNs: they would split every group)."""

    def __init__(self, settings: AlertSinkSettings) -> None:
        super().__init__(settings)
        if not self._url.rstrip("/").endswith("/api/v2/alerts"):  # the URL may name the server only
            self._url = self._url.rstrip("/") + "/api/v2/alerts"

    async def probe(self, session: aiohttp.ClientSession) -> str:
        """Alertmanager has a read-only status endpoint: ask it."""
        status_url = self._url.removesuffix("/alerts") + "/status"
        try:
            async with session.get(
                status_url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_SECONDS)
            ) as response:
                if response.status >= 300:
                    raise AlertError(f"{self.name}: Alertmanager status answered HTTP {response.status}")
                return "Alertmanager status answered 200"
        except aiohttp.ClientConnectorError as exc:
            raise AlertError(f"{self.name}: connection refused or unreachable ({type(exc).__name__})") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AlertError(f"{self.name}: {type(exc).__name__}") from None

    def body(self, event: dict[str, Any]) -> Any:
        start = datetime.fromtimestamp(float(event.get("detected_at") or time.time()), UTC)
        return [
            {
                "labels": {
                    "alertname": "KmsAuditDrift",
                    "kind": event["kind"],
                    "severity": event["severity"],
                    "account": event.get("account", ""),
                    "region": event.get("region", ""),
                    "event_id": event["id"],
                },
                "annotations": {
                    "summary": _summary(event),
                    "key_arn": event.get("key_arn", ""),
                    "principal": event.get("principal", ""),
                    "details": json.dumps(event.get("after")),
                    "why": str(event.get("why") or ""),
                    "remediation": str((event.get("remediation") or {}).get("summary", "")),
                },
                "startsAt": start.isoformat(),
            }
        ]


_TYPES: dict[str, type[HttpSink]] = {"webhook": HttpSink, "slack": SlackSink, "alertmanager": AlertmanagerSink}


def build_sinks(settings: Sequence[AlertSinkSettings]) -> list[HttpSink]:
    return [_TYPES[s.type](s) for s in settings]


def router(sinks: Sequence[HttpSink]) -> Any:
    """Which sinks an event goes to (used inside the snapshot's transaction)."""

    def route(event: DriftEvent) -> list[str]:
        # What pages people is a warning in the logs too (a log-only deployment sees it).
        emit = log.warning if severity_rank(event.severity) >= severity_rank("high") else log.info
        emit(
            "drift",
            kind=event.kind,
            severity=event.severity,
            key_arn=event.key_arn,
            principal=event.principal,
            account=event.account,
            region=event.region,
            event_id=event.id,
        )
        return [sink.name for sink in sinks if sink.wants(event)]

    return route


def baseline_router(sinks: Sequence[HttpSink]) -> Any:
    """The sinks that want a scope's first scan (`on_baseline`), by severity."""
    wanting = [sink for sink in sinks if sink.on_baseline]
    if not wanting:
        return None

    def route(event: DriftEvent) -> list[str]:
        return [sink.name for sink in wanting if sink.wants(event)]

    return route


def backoff(attempts: int) -> float:
    """Exponential with full jitter, capped at an hour: hours of downtime cost few requests."""
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, 5.0 * 2 ** min(attempts, 20)))


async def deliver(
    store: Store,
    sinks: Sequence[HttpSink],
    *,
    now: float | None = None,
    deadline_seconds: float = 30.0,
    trusted: Sequence[str] = (),
) -> tuple[int, int]:
    """Send what is due; returns (delivered, still pending). Never raises for a sink's failure.

    Each sink is delivered to on its own, concurrently, within `deadline_seconds`: a slow or dead
    sink cannot starve the others (issue #19). A sink that fails stops its round at once; its
    other alerts stay due, and the one it failed waits for its backoff."""
    by_name = {sink.name: sink for sink in sinks}
    due: dict[str, list[dict[str, Any]]] = {}
    for item in store.due_alerts(now if now is not None else time.time()):
        if item["sink"] in by_name:  # a sink removed from the config: its rows wait, visible in the database
            due.setdefault(item["sink"], []).append(item)
    # Why, and the first verified fix (issue #27; `trusted`: the config's zone of trust): CPU work
    # off the event loop, on its own connection, bounded (why.ALERT_SECONDS); then the deadline.
    await asyncio.to_thread(explain_events, store.path, [item for items in due.values() for item in items], trusted)
    deadline = time.monotonic() + deadline_seconds
    async with aiohttp.ClientSession() as session:
        counts = await asyncio.gather(
            *(_deliver_to(store, session, by_name[name], items, deadline) for name, items in due.items())
        )
    return sum(counts), store.pending_alerts()


async def _deliver_to(
    store: Store, session: aiohttp.ClientSession, sink: HttpSink, items: list[dict[str, Any]], deadline: float
) -> int:
    delivered = 0
    for item in items:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            await sink.send(session, item["event"], timeout=min(SEND_TIMEOUT_SECONDS, left))
        except AlertError as exc:
            store.mark_failed(item["event_id"], sink.name, str(exc), time.time() + backoff(item["attempts"]))
            log.warning(
                "alert.failed",
                sink=sink.name,
                event_id=item["event_id"],
                reason=str(exc),
                attempts=item["attempts"] + 1,
            )
            break  # this sink is not answering: the rest of its queue waits, the other sinks go on
        store.mark_delivered(item["event_id"], sink.name, time.time())
        delivered += 1
    return delivered
