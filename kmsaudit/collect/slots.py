"""Request slots shared fairly by the scopes of one scan (issue #24, defect 8: four slow or
throttled scopes took every slot, and a healthy scope's request waited 2.8 s).

`concurrency` slots in all; a scope holds at most a quarter of them (botocore's retries sleep
inside a call, issue #19). The last eighth of the free slots are kept for scopes below their fair
share (`concurrency` / the scopes wanting slots, and one more to come): a scope that holds its
share cannot take them, so one that arrives while others hold nearly everything starts at once;
a freed slot goes to the waiting scope holding the fewest. No I/O; one event loop."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

Scope = tuple[str, str]


class FairSlots:
    def __init__(self, total: int) -> None:
        self.total = total
        self.cap = max(2, total // 4)
        self.reserve = max(1, total // 8) if total >= 4 else 0
        self.free = total
        self.held: dict[Scope, int] = {}
        self._waiting: dict[Scope, deque[asyncio.Future[None]]] = {}

    def _wanting(self) -> int:
        return len({s for s, n in self.held.items() if n} | {s for s, q in self._waiting.items() if q})

    def _may_take(self, scope: Scope, extra: int = 0) -> bool:
        held = self.held.get(scope, 0)
        if self.free <= 0 or held >= self.cap:
            return False
        if self.free > self.reserve:
            return True
        # below its fair share, counting room for one more scope to come
        return held < self.total // (self._wanting() + extra + 1)

    def _take(self, scope: Scope) -> None:
        self.free -= 1
        self.held[scope] = self.held.get(scope, 0) + 1

    @asynccontextmanager
    async def hold(self, scope: Scope) -> AsyncIterator[None]:
        queue = self._waiting.get(scope)
        if not queue and self._may_take(scope, extra=0 if self.held.get(scope) else 1):
            self._take(scope)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(scope, deque()).append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release(scope)  # granted as it was cancelled: give it back
                else:
                    self._forget(scope, waiter)
                raise
        try:
            yield
        finally:
            self._release(scope)

    def _forget(self, scope: Scope, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(scope)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
        if queue is not None and not queue:
            del self._waiting[scope]

    def _release(self, scope: Scope) -> None:
        self.free += 1
        left = self.held.get(scope, 1) - 1
        if left:
            self.held[scope] = left
        else:
            self.held.pop(scope, None)
        self._dispatch()

    def _dispatch(self) -> None:
        """Free slots to the waiting scopes holding the fewest first."""
        while self.free > 0:
            ready = [s for s, q in self._waiting.items() if q and self._may_take(s)]
            if not ready:
                return
            scope = min(ready, key=lambda s: self.held.get(s, 0))
            queue = self._waiting[scope]
            waiter = queue.popleft()
            if not queue:
                del self._waiting[scope]
            if waiter.cancelled():
                continue
            self._take(scope)
            waiter.set_result(None)
