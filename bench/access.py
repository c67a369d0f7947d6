"""Bench scenarios for issue 10: what API keys cost, and how soon a webhook arrives.

- auth: the throughput load (submit + ``GET result?wait``) against two API processes on
  the same Redis and worker, one with ``[api] auth = "keys"`` (every request carries a
  key), one without; alternated, medians.
- webhooks: ``WEBHOOK_RATE`` invocations/s of echo, each with a webhook to a receiver on
  loopback, for ``WEBHOOK_SECONDS``; latency = when the receiver has it minus the result's
  ``finished_at`` (one clock: the same machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.receiver import serve_in_thread

WEBHOOK_RATE = 200
WEBHOOK_SECONDS = 10


def make_key(config: Path, conveyor_bin: Path) -> str:
    made = subprocess.run(
        [
            str(conveyor_bin),
            "keys",
            "create",
            "--name",
            f"bench-{time.time_ns()}",
            "--scope",
            "admin",
        ],
        env={**os.environ, "CONVEYOR_CONFIG": str(config)},
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip()


def keyed_config(config: Path) -> Path:
    """A copy of ``config`` with API keys required."""
    keyed = config.with_name("deploy-keys.toml")
    keyed.write_text(config.read_text().replace("[api]\n", '[api]\nauth = "keys"\n'))
    return keyed


class Receiver:
    """Records when each delivery arrived, with the result's finished_at."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = json.loads(await request.read())
        finished = datetime.fromisoformat(body["finished_at"]).timestamp()
        self.latencies.append((arrived - finished) * 1000)
        return web.Response(status=204)

    def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        serve_in_thread(app, "127.0.0.1", self.port)
        return self


def webhook_load(base: str, receiver: Receiver) -> dict[str, float]:
    """Invocations at WEBHOOK_RATE/s for WEBHOOK_SECONDS, each asking for a webhook."""
    total = WEBHOOK_RATE * WEBHOOK_SECONDS
    hook = {"url": f"http://127.0.0.1:{receiver.port}/hook"}
    receiver.latencies.clear()

    async def run() -> None:
        async with aiohttp.ClientSession(base) as client:

            async def one(i: int) -> None:
                body: dict[str, Any] = {"input": i, "webhook": hook}
                async with client.post("/functions/echo/invoke", json=body) as r:
                    assert r.status == 202, await r.text()

            start = time.perf_counter()
            tasks = []
            for i in range(total):
                delay = start + i / WEBHOOK_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)

    asyncio.run(run())
    deadline = time.time() + 60
    while len(receiver.latencies) < total and time.time() < deadline:
        time.sleep(0.1)
    got = sorted(receiver.latencies)
    assert len(got) == total, f"{len(got)} of {total} webhooks arrived"
    return {"p50": got[len(got) // 2], "p99": got[min(len(got) - 1, int(0.99 * len(got)))]}
