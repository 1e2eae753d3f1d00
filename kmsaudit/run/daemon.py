"""`kmsaudit daemon`: scans on a schedule until SIGTERM; serves /metrics, /healthz, /readyz (SPEC §6)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kmsaudit.collect import SharedSessions
from kmsaudit.config.settings import Config, is_cron, load_config
from kmsaudit.delivery.alerts import build_sinks, deliver
from kmsaudit.errors import KmsAuditError, StoreBusy, UsageError
from kmsaudit.evaluator import AuditScope
from kmsaudit.metrics import Metrics
from kmsaudit.model import ORGANIZATION, ScanResult
from kmsaudit.run.events import KNOWN_EVENTS, Consumer
from kmsaudit.run.reaudit import EventReaudit
from kmsaudit.run.scan import scan_and_record
from kmsaudit.run.supervise import Supervisor
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


class Daemon(EventReaudit):
    def __init__(self, config_path: str | Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.metrics = Metrics(event_names=KNOWN_EVENTS)
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
        self.event_sessions: SharedSessions | None = None
        # When (monotonic) the last full scan that read it started: each scope, each account's
        # IAM, the organization. A message in the queue before that is covered (issue #24,
        # defect 4; kmsaudit/run/receive.py: no clock that can be wrong decides it).
        self.read_at: dict[tuple[str, str], float] = {}
        self.iam_read_at: dict[str, float] = {}
        self.organization_read_at: float | None = None
        self.last_scan_end_monotonic: float | None = None
        self.last_good_scan_monotonic: float | None = None  # the end of the last scan that committed
        self._due: float | None = None  # the next scan, monotonic; computed once per scan's end
        self._consumer_config: Config | None = None  # the config the running consumer was built from
        self.supervisor = Supervisor(self.metrics, self.stopping)

    # -- HTTP ------------------------------------------------------------------------------
    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        """Ready: there is a snapshot to serve, every supervised task runs (issue #24) and scanning
        is not stuck (a scan was stored within twice the interval, or one is running). Failed
        scopes do not make it unready: the metrics and alerts report them, and one disabled region
        must not keep a pod out."""
        now = time.monotonic()
        reason = ""
        if not self.has_state:
            reason = "no snapshot yet"
        elif down := self.supervisor.down():
            reason = "task down: " + ", ".join(down)
        elif self.scanning_since is None and (
            (ended := self.last_good_scan_monotonic) is None or now - ended > 2 * self.config.interval_seconds
        ):
            reason = "no scan stored for over twice the interval"  # a failing scan is not a scan
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
    async def scan_once(self) -> ScanResult:
        """One full scan, on as many processes as `[scan] processes` says (as `kmsaudit scan`)."""
        async with self.writing:
            self.scanning_since = time.time()
            started = time.monotonic()  # what "covered" compares with: never the wall clock
            try:
                recorded = await scan_and_record(self.config, self.sinks, metrics=self.metrics)
            finally:
                self.scanning_since = None
                self.last_scan_end = time.time()
                self.last_scan_end_monotonic = time.monotonic()
            self.last_good_scan_monotonic = self.last_scan_end_monotonic
            # The principals and organization event re-reads evaluate against: not replaced by
            # those of a scan whose organization read failed (members would read as outsiders).
            organization_failed = any(s.account == ORGANIZATION and not s.ok for s in recorded.result.scopes)
            if recorded.audit_scope is not None and (self.audit_scope is None or not organization_failed):
                self.audit_scope = recorded.audit_scope
            self._read_by(recorded.result, started)
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
        return result

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
                deliver(store, self.sinks, deadline_seconds=STOP_FLUSH_SECONDS, trusted=self.config.trust.accounts),
                STOP_FLUSH_SECONDS + 1,
            )
        except TimeoutError:
            log.warning("daemon.flush_incomplete")  # the outbox keeps them for the next start
        finally:
            store.close()

    # -- events ----------------------------------------------------------------------------
    async def _until(self, moment: float) -> None:
        """Sleep until `moment` (monotonic clock), a stop or a reload request, whichever first."""
        waiters = [asyncio.ensure_future(self.stopping.wait()), asyncio.ensure_future(self.reload_requested.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=max(0.0, moment - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _next_scan(self, jitter: float) -> float:
        """When the next scan is due on the monotonic clock (issue #24, "Time"): an interval from
        the end of the last scan; a cron schedule's next match is read off the wall clock once, at
        the end of the scan, and waited for on the monotonic clock (a clock stepped back or forward
        does not move it)."""
        if self.last_scan_end_monotonic is None or self.last_scan_end is None:
            return time.monotonic()
        if self._due is None:
            delay = self.config.seconds_to_next_scan(self.last_scan_end)
            self._due = self.last_scan_end_monotonic + (delay if is_cron(self.config.scan.interval) else delay * jitter)
        return self._due

    def _start_consumers(self) -> None:
        """The events consumer of the current config: one supervised task per queue (a reload
        replaces them)."""
        assert self.config.events is not None
        names: dict[str, str] = {}
        events = Consumer(
            self.config,
            self.reaudit,
            self.metrics.count_event,
            self.metrics.event_received,
            health=lambda url, reason: self.supervisor.degraded(names.get(url, url), reason),
        )
        names.update(events.task_names())
        for url, name in events.task_names().items():
            self.supervisor.start(name, lambda url=url: events.poll(url, self.stopping))  # type: ignore[misc]
        log.info("events.started", queues=len(self.config.events.queues))

    async def _replace_consumer(self) -> None:
        """Stops the consumers of an old config and closes their sessions; the scheduler starts
        the new ones."""
        for name in self.supervisor.names():
            if name.startswith("events:"):
                await self.supervisor.stop(name)
        if self.event_sessions is not None:
            await self.event_sessions.sessions.__aexit__(None, None, None)
            self.event_sessions = None
        self._consumer_config = None

    async def _schedule(self, runner: web.AppRunner) -> None:
        """The scheduler (a supervised task): a scan when due, the consumer started after the
        first full scan, a reload between scans."""
        jitter = 1.0
        while not self.stopping.is_set():
            if self._consumer_config is not None and self._consumer_config is not self.config:
                await self._replace_consumer()  # reloaded: anew
            if self._consumer_config is None and self.audit_scope is not None and self.config.events is not None:
                # After the first full scan: events are re-read against its state and IAM.
                self._consumer_config = self.config
                self._start_consumers()
            if self.reload_requested.is_set():
                await self._reload(runner)  # a scan in progress has finished: this is between scans
                self._due = None
                continue  # the schedule may have changed: wait anew
            due = self._next_scan(jitter)
            if time.monotonic() < due:
                await self._until(due)
                continue
            if config_files_state(self.config_path, self.config) != self.files_seen:
                # A reviewed acceptance file (or config) applied from a ConfigMap or a deploy:
                # taken up by the next scan, no signal needed.
                await self._reload(runner, why="files changed")
            # One scan at a time: the next starts only after this one is stored.
            scan = asyncio.create_task(self.scan_once())
            stop = asyncio.create_task(self.stopping.wait())
            try:
                await asyncio.wait({scan, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not scan.done():
                    scan.cancel()  # collection is abandoned; no snapshot is written
                stop.cancel()
            self._due = None
            try:
                await scan
            except asyncio.CancelledError:
                if not self.stopping.is_set():
                    raise
                log.info("daemon.scan_cancelled")
            except StoreBusy as exc:
                log.warning("daemon.scan_skipped", reason=str(exc))  # another writer: try at the next
            except KmsAuditError as exc:
                log.error("daemon.scan_failed", reason=str(exc))
            finally:
                if self.last_scan_end_monotonic is None:  # the first scan failed before its end
                    self.last_scan_end, self.last_scan_end_monotonic = time.time(), time.monotonic()
            jitter = random.uniform(1 - JITTER, 1 + JITTER)  # ±10 %: many daemons not in step

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
        try:
            self.supervisor.start("scheduler", lambda: self._schedule(runner))
            await self.stopping.wait()
        finally:
            self.stopping.set()
            await self.supervisor.stop_all()
            if self.event_sessions is not None:
                await self.event_sessions.sessions.__aexit__(None, None, None)
            await self._flush()
            await runner.cleanup()
            log.info("daemon.stopped", scans=self.scans)


def run_daemon(config_path: str | Path) -> int:
    config = load_config(config_path)
    asyncio.run(Daemon(config_path, config).run())
    return 0
