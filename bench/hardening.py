"""The hardening of the new surfaces in the bench (issue: poison inputs, Redis held by one
script, files past quotas):

- Redis's longest block while the widest fan-out ``[pipelines] max_fanout`` allows is
  planned, run and cancelled: a thread PINGs Redis every millisecond and keeps the slowest
  answer of each phase, against the slowest while nothing else runs (the same thread, as
  long). Over ``echo`` the elements run as a map job's items; over ``echostream`` each is
  an invocation of its own, started a ``[pipelines] window`` at a time.
- Invoke throughput over ``echo`` against the code before these checks (the API's and the
  worker's new checks: portable JSON, owner and file rules, the open responses).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import redis

FANOUT = 10_000  # [pipelines] max_fanout's default: the widest allowed
PHASE_SECONDS = 2.0  # how long the running phase is watched


@contextmanager
def slowest_ping(url: str) -> Iterator[list[float]]:
    """PING every millisecond while the block runs; the slowest answer (ms) is appended
    to the list it yields when the block ends."""
    client = redis.Redis.from_url(url)
    stop, worst = threading.Event(), [0.0]

    def ping() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            client.ping()
            worst[0] = max(worst[0], (time.perf_counter() - start) * 1000)
            time.sleep(0.001)

    thread = threading.Thread(target=ping, daemon=True)
    thread.start()
    found: list[float] = []
    try:
        yield found
    finally:
        stop.set()
        thread.join()
        client.close()
        found.append(worst[0])


def fanout_blocks(base: str, redis_url: str, pipeline: str) -> dict[str, float]:
    """The slowest PING (ms) while a ``FANOUT``-element run of ``pipeline`` is accepted
    (``plan``), runs (``run``) and is cancelled (``cancel``), and over as long with nothing
    going on (``idle``)."""
    with httpx.Client(base_url=base, timeout=120) as client:
        phases: dict[str, float] = {}
        with slowest_ping(redis_url) as idle:
            time.sleep(PHASE_SECONDS)
        phases["idle"] = idle[0]
        with slowest_ping(redis_url) as plan:
            accepted = client.post(
                f"/functions/{pipeline}/invoke", json={"input": list(range(FANOUT))}
            )
        assert accepted.status_code == 202, accepted.text
        phases["plan"] = plan[0]
        with slowest_ping(redis_url) as run:
            time.sleep(PHASE_SECONDS)
        phases["run"] = run[0]
        run_id = accepted.json()["id"]
        with slowest_ping(redis_url) as cancel:
            answer = client.post(f"/functions/{pipeline}/results/{run_id}/cancel")
            wait_ended(client, pipeline, run_id)
        assert answer.status_code in (200, 409), answer.text
        phases["cancel"] = cancel[0]
    return phases


def wait_ended(client: httpx.Client, pipeline: str, run_id: str) -> None:
    while (
        not client.get(f"/functions/{pipeline}/results/{run_id}", params={"wait": 10})
        .json()
        .get("finished_at")
    ):
        pass


def in_turn(loads: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    """Each load run ``runs`` times, in turn, so every one sees the same machine."""
    rates: dict[str, list[float]] = {name: [] for name in loads}
    for _ in range(runs):
        for name, load in loads.items():
            rates[name].append(load())
    return rates
