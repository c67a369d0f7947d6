"""An HTTP receiver for webhook deliveries, on one loopback address, in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.processes import free_port


@dataclass
class Receiver:
    """An HTTP receiver on one loopback address, in a thread; what it got, per path."""

    host: str
    port: int = field(default_factory=free_port)
    got: dict[str, list[tuple[dict[str, str], bytes, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    failures: dict[str, int] = field(default_factory=dict)  # path -> 503s still to answer

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.strip("/")
        self.got[path].append((dict(request.headers), await request.read(), time.time()))
        if path == "hang":
            await asyncio.sleep(3600)
        if self.failures.get(path, 0) > 0:
            self.failures[path] -= 1
            return web.Response(status=503, headers={"Retry-After": "0.3"})
        if path == "redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/ok")
        if path == "gone":
            return web.Response(status=410)
        return web.Response(status=204)

    def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("POST", "/{path}", self._handle)
        serve_in_thread(app, self.host, self.port)
        return self


def serve_in_thread(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` from a daemon thread of its own event loop; return
    once it listens."""
    ready = threading.Event()

    def serve() -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, host, port).start())
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
