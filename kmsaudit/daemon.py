"""`kmsaudit daemon`: scans on a schedule until SIGTERM; serves /metrics, /healthz, /readyz (SPEC §6)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kmsaudit.alert import build_sinks, deliver
from kmsaudit.config import Config, is_cron, load_config
from kmsaudit.errors import KmsAuditError, UsageError
from kmsaudit.metrics import Metrics
from kmsaudit.scan import scan_and_record
from kmsaudit.store import Store

log = structlog.get_logger("kmsaudit.daemon")
JITTER = 0.1  # ±10 % of the interval, so many daemons do not hit AWS in step
STOP_FLUSH_SECONDS = 5.0


class Daemon:
    def __init__(self, config_path: str | Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.metrics = Metrics()
        self.sinks = build_sinks(config.alerts)
        self.last_success: float | None = None
        self.stopping = asyncio.Event()
        self.reload_requested = False
        self.scans = 0

    # -- HTTP ------------------------------------------------------------------------------
    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        """Ready: a successful scan within twice the interval."""
        fresh = self.last_success is not None and time.time() - self.last_success <= 2 * self.config.interval_seconds
        return web.Response(text="ready\n" if fresh else "no recent successful scan\n", status=200 if fresh else 503)

    # -- scanning --------------------------------------------------------------------------
    async def scan_once(self) -> None:
        recorded = await scan_and_record(self.config, self.sinks, metrics=self.metrics)
        result, events = recorded.result, recorded.events
        self.scans += 1
        if not result.failed_scopes and not result.iam_failures:
            self.last_success = result.finished_at
        log.info(
            "daemon.scan",
            scans=self.scans,
            findings=len(result.findings),
            drift=len(events),
            failed_scopes=len(result.failed_scopes),
        )

    def _reload(self) -> None:
        self.reload_requested = False
        try:
            config = load_config(self.config_path)
            sinks = build_sinks(config.alerts)
        except KmsAuditError as exc:
            log.error("daemon.reload_failed", reason=str(exc))  # keep running on the old config
            return
        self.config, self.sinks = config, sinks
        log.info("daemon.reloaded", config=str(self.config_path))

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

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: setattr(self, "reload_requested", True))
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # The store is checked before anything listens (an unusable path exits 2), and /metrics
        # serves the last known state from the first scrape, not nothing until a scan ends.
        store = Store(self.config.store.path)
        try:
            self.metrics.update(store)
        finally:
            store.close()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, _, port = self.config.daemon.listen.rpartition(":")
        try:
            await web.TCPSite(runner, host.strip("[]"), int(port)).start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(
                f"cannot listen on {self.config.daemon.listen} ([daemon] listen): {exc.strerror or exc}"
            ) from None
        log.info("daemon.started", listen=self.config.daemon.listen, interval=self.config.scan.interval)
        try:
            while not self.stopping.is_set():
                if self.reload_requested:
                    self._reload()
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
                except KmsAuditError as exc:
                    log.error("daemon.scan_failed", reason=str(exc))
                if self.stopping.is_set():
                    break
                delay = self.config.seconds_to_next_scan(time.time())
                if not is_cron(self.config.scan.interval):
                    delay *= random.uniform(1 - JITTER, 1 + JITTER)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
        finally:
            await self._flush()
            await runner.cleanup()
            log.info("daemon.stopped", scans=self.scans)


def run_daemon(config_path: str | Path) -> int:
    config = load_config(config_path)
    asyncio.run(Daemon(config_path, config).run())
    return 0
