"""Streams in the bench (bench/functions/ticker: a generator yielding chunks with a fixed
delay): the time to the first chunk at the client less the handler's own time to its
first yield, chunks per second through one stream against the generator's own rate in a
plain process, and the API's CPU per chunk with 100 streams followed at once."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.measure import pct
from conveyor.cli.streams import parse

HERE = Path(__file__).parent
CHUNKS = 200
DELAY = 0.005  # a token generator at about 200 tokens a second


def own_rate(chunks: int = CHUNKS, delay: float = DELAY) -> float:
    """Chunks/s of the generator itself, iterated in this process."""
    spec = importlib.util.spec_from_file_location("ticker", HERE / "functions/ticker/handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    got = list(module.run({"chunks": chunks, "delay": delay}))
    return (len(got) - 1) / (got[-1]["after"] - got[0]["after"])


def first_chunk(base: str, runs: int = 40) -> dict[str, float]:
    """Per invocation: from the invoke's first byte to the first chunk at the client, less
    the handler's own time to its first yield (ms): p50 and p99."""
    added = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(runs):
            start = time.perf_counter()
            body = {"input": {"chunks": 2, "delay": 0.0}}
            accepted = client.post("/functions/ticker/invoke", json=body).json()
            with client.stream("GET", accepted["stream_url"]) as response:
                for event in parse(response.iter_lines()):
                    if event.kind == "output":
                        at = time.perf_counter() - start
                        added.append((at - json.loads(event.data)["output"]["after"]) * 1000)
                        break
    return {"p50": pct(added, 0.5), "p99": pct(added, 0.99)}


def one_stream(base: str, chunks: int = CHUNKS, delay: float = DELAY) -> dict[str, float]:
    """Chunks/s a client receives through one stream, first chunk to last."""
    times = []
    with httpx.Client(base_url=base, timeout=60) as client:
        body = {"input": {"chunks": chunks, "delay": delay}}
        accepted = client.post("/functions/ticker/invoke", json=body).json()
        with client.stream("GET", accepted["stream_url"]) as response:
            for event in parse(response.iter_lines()):
                if event.kind == "output":
                    times.append(time.perf_counter())
                elif event.kind == "done":
                    break
    return {"rate": (len(times) - 1) / (times[-1] - times[0])}


async def many_streams(base: str, streams: int = 100, chunks: int = CHUNKS) -> dict[str, Any]:
    """``streams`` invocations followed at once: chunks received in all, and seconds."""
    received = 0

    async def follow(session: aiohttp.ClientSession) -> None:
        nonlocal received
        body = {"input": {"chunks": chunks, "delay": DELAY}}
        async with session.post("/functions/ticker/invoke", json=body) as r:
            accepted = await r.json()
        async with session.get(accepted["stream_url"]) as r:
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line == "event: output":
                    received += 1
                elif line == "event: done":
                    return

    connector = aiohttp.TCPConnector(limit=streams)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(follow(session) for _ in range(streams)))
    return {"chunks": received, "seconds": time.perf_counter() - start}
