"""Pacing at AWS's rate: requests spread evenly, one every 1/rate seconds.

AWS meters each account × region × operation with a token bucket. A sliding-window limiter
(asyncio-throttle's) lets a whole window's worth out at once, and latency jitter on the way then
lands them in AWS's bucket as a burst: throttling at 80 % of the quota (issue #18). Here requests
leave one at a time, each at least one emission interval after the one before (the generic cell
rate algorithm with no burst), nobody polls, and over any one-second window at most `rate`
requests leave. The interval widens on throttling and narrows back on success (the caller's
AIMD), never below the configured rate's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    """One account × region × operation. `clock` and `sleep` are injectable (tests).

    The next request may leave one interval after the previous one actually left, not after it
    was due: when the event loop stalls (a long evaluation, a busy machine), the requests that
    waited leave one by one afterwards, never together (no catch-up burst). Callers queue in
    order (asyncio.Lock is first come, first served)."""

    __slots__ = ("_lock", "base", "clock", "interval", "next_at", "sleep")

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("a rate must be positive")
        self.base = self.interval = 1.0 / rate  # seconds between two requests
        self.clock = clock
        self.sleep = sleep
        self.next_at = 0.0  # the earliest the next request may leave
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for this request's turn; returns when it leaves."""
        async with self._lock:
            now = self.clock()
            if self.next_at > now:
                await self.sleep(self.next_at - now)
                now = self.clock()
            self.next_at = now + self.interval
            return now

    def slow_down(self) -> None:
        """A throttling answer: a tenth slower, to a sixteenth of the rate at most."""
        self.interval = min(self.base * 16, self.interval * 1.1)

    def recover(self) -> None:
        """A success: win back a little, never beyond the configured rate."""
        if self.interval > self.base:
            self.interval = max(self.base, self.interval * 0.97)
