"""A webhook receiver on loopback for the alert tests: an aiohttp server in its own thread whose
`_handle` subclasses override (record, hold, fail…)."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


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
