"""A real model in `make bench` (bench/run.py builds the rows; `BENCH_ONLY=embed` runs them
alone): all-MiniLM-L6-v2 embedding one short sentence per request, from 64 HTTP clients,

- against the model's own limits in a plain process (`embed_inprocess.py`): one sentence
  at a time, and batches of `max_batch_size`;
- with Conveyor's batching on and off;
- and the hand-written FastAPI + Celery service users run today (`seed_service.py`), the
  client polling its result every 20 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.embed_inprocess import sentence
from bench.measure import pct
from tests.support import BIN, Process, free_port, wait_for

HERE = Path(__file__).resolve().parent


CLIENTS = 64
REQUESTS = 1000
POLL = 0.02  # seconds between a seed-service client's looks at its result
OFFLINE = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def inprocess(n: int, batch: int) -> float:
    """Sentences/s of the model alone, one torch thread."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.embed_inprocess", str(n), str(batch)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **OFFLINE},
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rate"])


class SeedService:
    """The hand-written FastAPI + Celery service, on the bench's Redis."""

    def __init__(self, root: Path, config: Path, redis_url: str) -> None:
        env = {**OFFLINE, "BENCH_REDIS_URL": redis_url}
        self.worker = Process(
            [str(BIN / "celery"), "-A", "seed_service", "worker", "--pool=prefork",
             "--concurrency=1", "-Q", "seed", "--without-gossip", "--without-mingle",
             "--loglevel=WARNING"],
            config, root / "seed-worker.log", env, HERE,
        )  # fmt: skip
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.api = Process(
            [str(BIN / "uvicorn"), "seed_service:api", "--port", str(port),
             "--no-access-log", "--log-level", "warning"],
            config, root / "seed-api.log", env, HERE,
        )  # fmt: skip

    def warm(self) -> None:
        wait_for(lambda: asyncio.run(_seed_one(self.base)) is not None, 120, "the seed service")

    def stop(self) -> None:
        self.api.stop()
        self.worker.stop()


async def _seed_one(base: str) -> list[float] | None:
    async with aiohttp.ClientSession(base) as client:
        return await _seed_call(client, sentence(0))


async def _seed_call(client: aiohttp.ClientSession, text: str) -> Any:
    async with client.post("/predict", json={"text": text}) as r:
        task = (await r.json())["task_id"]
    while True:
        async with client.get(f"/result/{task}") as r:
            answer = await r.json()
        if "result" in answer:  # (its status alone can say SUCCESS a moment before ready())
            return answer["result"]
        await asyncio.sleep(POLL)


def seed_load(base: str, total: int = REQUESTS, clients: int = CLIENTS) -> dict[str, float]:
    async def run() -> dict[str, float]:
        latencies: list[float] = []
        counter = iter(range(total))
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(base, connector=connector) as client:

            async def one_client() -> None:
                for i in counter:
                    start = time.perf_counter()
                    assert len(await _seed_call(client, sentence(i))) == 384
                    latencies.append((time.perf_counter() - start) * 1000)

            start = time.perf_counter()
            await asyncio.gather(*(one_client() for _ in range(clients)))
            elapsed = time.perf_counter() - start
        return {"rate": total / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}

    return asyncio.run(run())
