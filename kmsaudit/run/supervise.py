"""The daemon's long-lived tasks under one supervisor (issue #24, "Supervision"): the scheduler and
each queue's consumer run as named tasks; a task that ends by an exception is logged with its
traceback, counted (`kmsaudit_task_restarts_total{task}`), shown down (`kmsaudit_task_up{task}`
0, `/readyz` 503) and started again after a backoff that doubles from 1 s to 60 s (and resets
once a run has lasted a minute). Nothing a task raises ends the daemon silently."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from kmsaudit.metrics import Metrics

log = structlog.get_logger("kmsaudit.daemon")

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
HEALTHY_RUN = 60.0  # a run this long resets the backoff


@dataclass
class _Task:
    name: str
    start: Callable[[], Awaitable[None]]
    task: asyncio.Task[None] | None = None
    down_since: float | None = None  # monotonic; None while running
    failures: int = 0
    restarts: int = 0
    last_error: str = ""
    runner: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """`supervisor.start(name, factory)`: runs `factory()` until `stopping` is set, restarting it
    when it raises. A task that returns normally while the daemon is not stopping is restarted
    too (a consumer has nothing to finish)."""

    def __init__(
        self, metrics: Metrics, stopping: asyncio.Event, sleep: Callable[[float], Awaitable[None]] | None = None
    ) -> None:
        self.metrics = metrics
        self.stopping = stopping
        self._tasks: dict[str, _Task] = {}
        self._sleep = sleep or self._sleep_or_stop

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        if name in self._tasks:
            raise ValueError(f"task {name} is already supervised")
        entry = self._tasks[name] = _Task(name, factory)
        entry.runner = asyncio.create_task(self._run(entry), name=f"supervise:{name}")

    async def _run(self, entry: _Task) -> None:
        backoff = FIRST_BACKOFF
        while not self.stopping.is_set():
            began = time.monotonic()
            entry.down_since = None
            self.metrics.task_up.labels(entry.name).set(1)
            try:
                await entry.start()
                if self.stopping.is_set():
                    return
                entry.last_error = "returned while the daemon runs"
                log.error("daemon.task_ended", task=entry.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                entry.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("daemon.task_crashed", task=entry.name, reason=entry.last_error)
            entry.down_since = time.monotonic()
            entry.failures += 1
            self.metrics.task_up.labels(entry.name).set(0)
            if time.monotonic() - began >= HEALTHY_RUN:
                backoff = FIRST_BACKOFF
            log.warning("daemon.task_restarting", task=entry.name, in_seconds=backoff, failures=entry.failures)
            await self._sleep(backoff)
            if self.stopping.is_set():
                return
            entry.restarts += 1
            self.metrics.task_restarts.labels(entry.name).inc()
            backoff = min(MAX_BACKOFF, backoff * 2)

    def degraded(self, name: str, reason: str | None) -> None:
        """A running task that cannot do its work (a consumer whose receives keep failing) is
        shown down — `kmsaudit_task_up` 0, `/readyz` 503 — until it reports `None` again."""
        entry = self._tasks.get(name)
        if entry is None:
            return
        if reason is None:
            entry.down_since = None
            self.metrics.task_up.labels(name).set(1)
            return
        if entry.down_since is None:
            entry.down_since = time.monotonic()
        entry.last_error = reason
        self.metrics.task_up.labels(name).set(0)

    def down(self) -> list[str]:
        """The tasks not running now (crashed, waiting for their restart)."""
        return sorted(name for name, entry in self._tasks.items() if entry.down_since is not None)

    def status(self, name: str) -> _Task | None:
        return self._tasks.get(name)

    async def stop(self, name: str) -> None:
        """Stop one task (a reload replaces it) and forget it."""
        entry = self._tasks.pop(name, None)
        if entry is None or entry.runner is None:
            return
        entry.runner.cancel()
        await asyncio.gather(entry.runner, return_exceptions=True)
        with contextlib.suppress(KeyError):  # a task that is gone is not shown down
            self.metrics.task_up.remove(name)

    async def stop_all(self) -> None:
        for name in list(self._tasks):
            await self.stop(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)
