"""Map-job scenarios of `make bench` (bench/run.py calls these with its running platform).

- a 100,000-item job over ``echo``: items/s from the first byte of the upload to the
  job's end, against single invocations over HTTP (the throughput scenario's rate);
- single round trips on the same queue while such a job runs, against the same loop idle;
- a job over the batching ``mlp``, against the model's own batched throughput in a plain
  process (``mlp_inprocess.py``: the same inputs, validated into the same pydantic model,
  ``predict_batch`` in batches of the manifest's size);
- the API's peak RSS while it takes a 1,000,000-item NDJSON upload, and what each waiting
  item costs Redis.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import redis

from bench.measure import pct, rss_mib

HERE = Path(__file__).resolve().parent
NDJSON = {"content-type": "application/x-ndjson"}


def features(i: int) -> dict[str, list[float]]:
    """The mlp's input number ``i`` (the batching scenario's inputs)."""
    return {"x": [((i * 7 + j) % 13) / 13 for j in range(16)]}


def ndjson_lines(n: int, make: Any, block: int = 10_000) -> Iterator[bytes]:
    for start in range(0, n, block):
        yield "".join(
            json.dumps(make(i)) + "\n" for i in range(start, min(n, start + block))
        ).encode()


async def _run_job(
    client: aiohttp.ClientSession, name: str, body: bytes
) -> tuple[dict[str, Any], float]:
    """Submit, wait for the end; the job and the seconds from the first byte to its end."""
    start = time.perf_counter()
    async with client.post(f"/functions/{name}/map", data=body, headers=NDJSON) as r:
        job = await r.json()
        assert r.status == 202, job
    while True:
        async with client.get(job["status_url"], params={"wait": "5"}) as r:
            job = await r.json()
        if job["finished_at"] is not None:
            break
    assert job["status"] == "succeeded", job
    return job, time.perf_counter() - start


def job_rate(base: str, name: str, body: bytes, total: int) -> dict[str, float]:
    async def run() -> dict[str, float]:
        async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(600)) as client:
            job, seconds = await _run_job(client, name, body)
        assert job["total"] == total
        return {"rate": total / seconds}

    return asyncio.run(run())


async def _round_trips(
    client: aiohttp.ClientSession, until: asyncio.Event | None, n: int
) -> list[float]:
    times: list[float] = []
    i = 0
    while (until is None and i < n) or (until is not None and not until.is_set()):
        start = time.perf_counter()
        async with client.post("/functions/echo/invoke?wait=5", json={"input": i}) as r:
            body = await r.json()
        assert r.status == 200 and body["output"] == i, body
        times.append((time.perf_counter() - start) * 1000)
        i += 1
    return times


def singles_during_job(base: str, body: bytes) -> dict[str, float]:
    """Sequential echo round trips while a job over echo runs (from its 202 to its end),
    and the same loop idle just before: p50 and p99 of each."""

    async def run() -> dict[str, float]:
        async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(600)) as client:
            idle = await _round_trips(client, None, 300)
            async with client.post("/functions/echo/map", data=body, headers=NDJSON) as r:
                job = await r.json()
                assert r.status == 202, job
            ended = asyncio.Event()

            async def watch() -> None:
                while True:
                    async with client.get(job["status_url"], params={"wait": "5"}) as r:
                        state = await r.json()
                    if state["finished_at"] is not None:
                        ended.set()
                        return

            watcher = asyncio.create_task(watch())
            during = await _round_trips(client, ended, 0)
            await watcher
        return {
            "idle_p50": pct(idle, 0.5),
            "idle_p99": pct(idle, 0.99),
            "p50": pct(during, 0.5),
            "p99": pct(during, 0.99),
            "n": float(len(during)),
        }

    return asyncio.run(run())


def mlp_in_process(n: int, batch: int) -> float:
    """items/s of the mlp's own predict_batch, in a fresh process (torch stays out of this
    one)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.mlp_inprocess", str(n), str(batch)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(json.loads(done.stdout.splitlines()[-1])["rate"])


def big_upload(base: str, api_pid: int, redis_url: str, n: int) -> dict[str, float]:
    """Stream ``n`` items to a fresh API (no worker consumes their queue), then cancel."""
    client = redis.Redis.from_url(redis_url)
    before_rss = rss_mib(api_pid)[0]
    before_redis = int(client.info("memory")["used_memory"])
    start = time.perf_counter()
    with httpx.Client(base_url=base, timeout=httpx.Timeout(30, read=1200)) as http:
        r = http.post(
            "/functions/echo/map",
            content=ndjson_lines(n, lambda i: {"i": i, "text": f"row {i}"}),
            headers=NDJSON,
        )
        assert r.status_code == 202, r.text
        seconds = time.perf_counter() - start
        waiting = int(client.info("memory")["used_memory"]) - before_redis
        peak = rss_mib(api_pid)[1]
        assert http.post(f"{r.json()['status_url']}/cancel").status_code == 200
    line = len(json.dumps({"i": n // 2, "text": f"row {n // 2}"}))
    return {
        "rss_before": before_rss,
        "rss_peak": peak,
        "seconds": seconds,
        "redis_per_item": waiting / n,
        "input_bytes": float(line),
    }
