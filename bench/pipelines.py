"""Pipelines in the bench (bench/functions/echo3, echofan):

- a 3-step chain of ``echo``, invoked with ``?wait`` (latency p50/p99 from the request to
  the run's result), against three sequential single invocations of ``echo`` over HTTP,
  each with ``?wait``, the next sent when the last answered;
- a 10,000-element fan-out over ``echo`` with a fan-in that counts the outputs (elements/s from
  the invoke to the run's end) against a map job of ``echo`` over the same items (items/s
  from the upload's first byte to the job's end).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.measure import pct

CHAIN_RUNS = 100
FAN_ITEMS = 10_000


def chain(base: str, runs: int = CHAIN_RUNS) -> dict[str, float]:
    """The 3-step chain's latency and three sequential invocations' (ms), taken in turn so
    both see the same machine: ``p50``, ``p99`` and ``apart_p50``, ``apart_p99``."""
    chained, apart = [], []
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(runs):
            start = time.perf_counter()
            answer = client.post("/functions/echo3/invoke", params={"wait": 30}, json={"input": i})
            assert answer.status_code == 200 and answer.json()["output"] == i, answer.text
            chained.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            value: Any = i
            for _ in range(3):
                answer = client.post(
                    "/functions/echo/invoke", params={"wait": 30}, json={"input": value}
                )
                assert answer.status_code == 200, answer.text
                value = answer.json()["output"]
            apart.append((time.perf_counter() - start) * 1000)
    return {
        "p50": pct(chained, 0.5),
        "p99": pct(chained, 0.99),
        "apart_p50": pct(apart, 0.5),
        "apart_p99": pct(apart, 0.99),
    }


def fan(base: str, items: int = FAN_ITEMS) -> dict[str, float]:
    """Elements/s through a fan-out of ``items`` and its fan-in, invoke to end."""
    inputs = [{"i": i, "text": f"row {i}"} for i in range(items)]
    with httpx.Client(base_url=base, timeout=120) as client:
        start = time.perf_counter()
        accepted = client.post("/functions/echofan/invoke", json={"input": inputs})
        assert accepted.status_code == 202, accepted.text
        url = accepted.json()["result_url"]
        while True:
            done = client.get(url, params={"wait": 30}).json()
            if done.get("finished_at"):
                break
        seconds = time.perf_counter() - start
    assert done["status"] == "succeeded" and done["output"] == items, done.get("error")
    return {"rate": items / seconds}
