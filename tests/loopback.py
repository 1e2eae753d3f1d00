"""Loopback helpers of the tests and benchmarks: free ports, HTTP GETs polled until an answer
comes, waiting for a condition, and a webhook receiver whose `_handle` subclasses override
(record, hold, fail…). Bounded polling, never a timing assertion."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get_until(url: str, done: Callable[[int, str], bool], attempts: int = 300) -> tuple[int, str]:
    """Poll (bounded) until `done`; returns the last answer."""
    answer = (0, "")
    for _ in range(attempts):
        try:
            answer = http_get(url)
            if done(*answer):
                break
        except OSError:
            pass
        time.sleep(0.2)
    return answer


class LocalReceiver:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    def start(self) -> int:
        """Serve POSTs on every path; returns the port."""

        async def go() -> int:
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            # Handlers are cancelled when their client goes away (a sender killed mid-request).
            self.runner = web.AppRunner(app, handler_cancellation=True)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
            return int(self.runner.addresses[0][1])

        self.port = asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)
        return self.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class RecordingReceiver(LocalReceiver):
    """Answers 200 and records each delivery's Idempotency-Key."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        return web.Response(status=200)


class Blackhole:
    """Accepts connections and never answers (a sink behind a dead load balancer)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(100)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class JsonReceiver(LocalReceiver):
    """Answers 200 and records each delivery's JSON body."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.events.append(json.loads(await request.read()))
        return web.Response(status=200)
