"""`kmsaudit daemon`: scans on a schedule until SIGTERM; serves /metrics, /healthz, /readyz (SPEC §6)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kmsaudit.collect import Collector, SharedSessions
from kmsaudit.config.settings import Config, is_cron, load_config
from kmsaudit.delivery.alerts import build_sinks, deliver
from kmsaudit.errors import KmsAuditError, StoreBusy, UsageError
from kmsaudit.evaluator import AuditScope
from kmsaudit.metrics import Metrics
from kmsaudit.run.events import Change, Consumer, Message
from kmsaudit.run.scan import scan_and_record
from kmsaudit.store.database import Store

log = structlog.get_logger("kmsaudit.daemon")
JITTER = 0.1  # ±10 % of the interval, so many daemons do not hit AWS in step
STOP_FLUSH_SECONDS = 5.0


def config_files_state(config_path: str | Path, config: Config) -> tuple[tuple[str, int, int] | None, ...]:
    """The config file and its acceptance files as last seen (modification time and size; a
    Kubernetes ConfigMap update swaps them in through a symlink, which this follows)."""

    def state(path: str | Path) -> tuple[str, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (str(path), st.st_mtime_ns, st.st_size)

    return tuple(state(path) for path in (config_path, *config.acceptance.files))


class Daemon:
    def __init__(self, config_path: str | Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.metrics = Metrics()
        self.sinks = build_sinks(config.alerts)
        self.stopping = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.scans = 0
        self.has_state = False  # a snapshot to serve: recorded by this process or found at start
        self.scanning_since: float | None = None
        self.last_scan_end: float | None = None
        self._site: web.TCPSite | None = None
        self.files_seen = config_files_state(config_path, config)
        # One writer at a time in this process: scheduled scans and event re-reads (README
        # "Real-time detection"), and what the last full scan read of IAM and the organization.
        self.writing = asyncio.Lock()
        self.audit_scope: AuditScope | None = None
        self.last_full_started = 0.0
        self.event_sessions: SharedSessions | None = None

    # -- HTTP ------------------------------------------------------------------------------
    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        """Ready: there is a snapshot to serve and scanning is not stuck (the last scan ended
        within twice the interval, or one is running). Failed scopes do not make it unready:
        the metrics and alerts report them, and one disabled region must not keep a pod out."""
        now = time.time()
        reason = ""
        if not self.has_state:
            reason = "no snapshot yet"
        elif self.scanning_since is None and (
            self.last_scan_end is None or now - self.last_scan_end > 2 * self.config.interval_seconds
        ):
            reason = "no scan for over twice the interval"
        return web.Response(text=f"{reason or 'ready'}\n", status=503 if reason else 200)

    async def _listen(self, runner: web.AppRunner, listen: str) -> web.TCPSite:
        host, _, port = listen.rpartition(":")
        site = web.TCPSite(runner, host.strip("[]"), int(port))
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen} ([daemon] listen): {exc.strerror or exc}") from None
        return site

    # -- scanning --------------------------------------------------------------------------
    async def scan_once(self) -> None:
        async with self.writing:
            self.scanning_since = started = time.time()
            collector = Collector(self.config)
            try:
                recorded = await scan_and_record(self.config, self.sinks, metrics=self.metrics, collector=collector)
            finally:
                self.scanning_since = None
                self.last_scan_end = time.time()
            self.audit_scope, self.last_full_started = collector.audit_scope, started
        result, events = recorded.result, recorded.events
        self.scans += 1
        self.has_state = True
        log.info(
            "daemon.scan",
            scans=self.scans,
            findings=len(result.findings),
            drift=len(events),
            failed_scopes=len(result.failed_scopes),
        )

    async def _reload(self, runner: web.AppRunner, why: str = "SIGHUP") -> None:
        """SIGHUP, or a changed config or acceptance file before a scan: the config is read and
        checked at once; a bad one is logged and the old one kept (listener included). A changed
        `daemon.listen` is bound before the old is closed."""
        self.reload_requested.clear()
        self.files_seen = config_files_state(self.config_path, self.config)
        try:
            config = load_config(self.config_path)
            sinks = build_sinks(config.alerts)
            if config.store.path != self.config.store.path:
                Store(config.store.path).close()  # usable, before it is relied on
            site = None
            if config.daemon.listen != self.config.daemon.listen:
                site = await self._listen(runner, config.daemon.listen)
        except KmsAuditError as exc:
            log.error("daemon.reload_failed", reason=str(exc), config=str(self.config_path), why=why)
            return
        if site is not None and self._site is not None:
            await self._site.stop()
            self._site = site
        self.config, self.sinks = config, sinks
        self.files_seen = config_files_state(self.config_path, config)
        log.info("daemon.reloaded", config=str(self.config_path), listen=config.daemon.listen, why=why)

    async def _flush(self) -> None:
        if not self.sinks:
            return
        store = Store(self.config.store.path)
        try:
            await asyncio.wait_for(
                deliver(store, self.sinks, deadline_seconds=STOP_FLUSH_SECONDS), STOP_FLUSH_SECONDS + 1
            )
        except TimeoutError:
            log.warning("daemon.flush_incomplete")  # the outbox keeps them for the next start
        finally:
            store.close()

    # -- events ----------------------------------------------------------------------------
    async def reaudit(self, messages: Sequence[Message]) -> None:
        """What a batch of CloudTrail events changed, recorded like a scan (README "Real-time
        detection"): the keys they name re-read and re-evaluated with the IAM of the last full
        scan; an IAM or Organizations change, a full scan (one for a whole burst: an event that
        happened before the last full scan started is already in it). Returns once committed."""
        changes = [m.outcome for m in messages if isinstance(m.outcome, Change)]
        margin = 2.0  # eventTime is to the second; CloudTrail's clock and ours (NTP) agree within that
        pending = [c for c in changes if c.event_time + margin >= self.last_full_started]
        for c in changes:
            if c not in pending:
                self.metrics.count_event(c.source, c.name, "covered")
        if any(c.kind in ("iam", "organization") for c in pending):
            await self.scan_once()
            for c in pending:
                self.metrics.count_event(c.source, c.name, "full-scan")
                self.metrics.event_to_alert.observe(max(0.0, time.time() - c.event_time))
            return
        only: dict[tuple[str, str], set[str]] = {}
        known = self._known_scopes()
        for c in pending:
            arn = c.key_arn or self._alias_target(c)
            if not arn or (c.account, c.region) not in known:
                self.metrics.count_event(c.source, c.name, "unknown-scope" if arn else "unresolved")
                continue
            only.setdefault((c.account, c.region), set()).add(arn)
        if not only or self.audit_scope is None:
            return
        async with self.writing:
            if self.event_sessions is None:
                self.event_sessions = SharedSessions(self.config)
                await self.event_sessions.sessions.__aenter__()
            collector = Collector(
                self.config,
                only={k: frozenset(v) for k, v in only.items()},
                audit_scope=self.audit_scope,
                reuse=self.event_sessions,
            )
            await scan_and_record(self.config, self.sinks, metrics=self.metrics, collector=collector)
        done = time.time()
        for c in pending:
            if c.key_arn or c.alias:
                self.metrics.count_event(c.source, c.name, "reaudited")
                self.metrics.event_to_alert.observe(max(0.0, done - c.event_time))
        log.info("events.reaudited", keys=sum(len(v) for v in only.values()), events=len(pending))

    def _known_scopes(self) -> set[tuple[str, str]]:
        store = Store(self.config.store.path, create=False)
        try:
            return store.event_scopes()
        finally:
            store.close()

    def _alias_target(self, change: Change) -> str:
        """The key an alias named in the last state (DeleteAlias carries no key id)."""
        store = Store(self.config.store.path, create=False)
        try:
            state = store.last_good_state(change.account, change.region)
        finally:
            store.close()
        for arn, names in (state.names if state else {}).items():
            if change.alias in names.get("aliases", ()):
                return arn
        return ""

    async def _until(self, moment: float) -> None:
        """Sleep until `moment`, a stop or a reload request, whichever comes first."""
        waiters = [asyncio.ensure_future(self.stopping.wait()), asyncio.ensure_future(self.reload_requested.wait())]
        try:
            await asyncio.wait(waiters, timeout=max(0.0, moment - time.time()), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _next_scan(self, jitter: float) -> float:
        """When the next scan is due, by the current schedule, from the end of the last one."""
        if self.last_scan_end is None:
            return time.time()
        delay = self.config.seconds_to_next_scan(self.last_scan_end)
        return self.last_scan_end + (delay if is_cron(self.config.scan.interval) else delay * jitter)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # The store is checked before anything listens (an unusable path exits 2), and /metrics
        # serves the last known state from the first scrape, not nothing until a scan ends.
        store = Store(self.config.store.path)
        try:
            self.metrics.update(store)
            self.has_state = store.latest_snapshot() is not None
        finally:
            store.close()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            self._site = await self._listen(runner, self.config.daemon.listen)
        except UsageError:
            await runner.cleanup()
            raise
        log.info("daemon.started", listen=self.config.daemon.listen, interval=self.config.scan.interval)
        jitter = 1.0
        consumer: asyncio.Task[None] | None = None
        consumer_config = self.config
        try:
            while not self.stopping.is_set():
                if consumer is not None and consumer_config is not self.config:  # reloaded: anew
                    consumer.cancel()
                    await asyncio.gather(consumer, return_exceptions=True)
                    consumer = None
                    if self.event_sessions is not None:
                        await self.event_sessions.sessions.__aexit__(None, None, None)
                        self.event_sessions = None
                if consumer is None and self.audit_scope is not None and self.config.events is not None:
                    consumer_config = self.config
                    # After the first full scan: events are re-read against its state and IAM.
                    events = Consumer(self.config, self.reaudit, self.metrics.count_event, self.metrics.event_received)
                    consumer = asyncio.create_task(events.run(self.stopping))
                    log.info("events.started", queues=len(self.config.events.queues))
                if self.reload_requested.is_set():
                    await self._reload(runner)  # a scan in progress has finished: this is between scans
                    continue  # the schedule may have changed: wait anew
                due = self._next_scan(jitter)
                if time.time() < due:
                    await self._until(due)
                    continue
                if config_files_state(self.config_path, self.config) != self.files_seen:
                    # A reviewed acceptance file (or config) applied from a ConfigMap or a deploy:
                    # taken up by the next scan, no signal needed.
                    await self._reload(runner, why="files changed")
                # One scan at a time: the next starts only after this one is stored.
                scan = asyncio.create_task(self.scan_once())
                stop = asyncio.create_task(self.stopping.wait())
                await asyncio.wait({scan, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not scan.done():
                    scan.cancel()  # collection is abandoned; no snapshot is written
                stop.cancel()
                try:
                    await scan
                except asyncio.CancelledError:
                    log.info("daemon.scan_cancelled")
                except StoreBusy as exc:
                    log.warning("daemon.scan_skipped", reason=str(exc))  # another writer: try at the next
                except KmsAuditError as exc:
                    log.error("daemon.scan_failed", reason=str(exc))
                jitter = random.uniform(1 - JITTER, 1 + JITTER)  # ±10 %: many daemons not in step
        finally:
            if consumer is not None:
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
            if self.event_sessions is not None:
                await self.event_sessions.sessions.__aexit__(None, None, None)
            await self._flush()
            await runner.cleanup()
            log.info("daemon.stopped", scans=self.scans)


def run_daemon(config_path: str | Path) -> int:
    config = load_config(config_path)
    asyncio.run(Daemon(config_path, config).run())
    return 0
