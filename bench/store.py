"""The function store in `make bench`: deploy-to-invokable for a pushed folder (against a
dropped one), the first invocation on a worker that must fetch a 20 MiB bundle (against
one that fetches a few hundred bytes), and Redis memory per stored version.

`BENCH_ONLY=store make bench` runs these rows alone (bench/run.py builds them).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from conveyor.store.bundle import pack
from tests.support import Process, conveyor, wait_for

HERE = Path(__file__).resolve().parent


WEIGHTS = 20 * 1024 * 1024
PUSHES = 10
MEMORY_VERSIONS = 5

HEAVY = """
from pathlib import Path

class Model:
    def setup(self) -> None:
        self.size = len((Path(__file__).parent / "weights.bin").read_bytes())

    def predict(self, x: int) -> int:
        return self.size + x
"""
SMALL = "def run(x: int) -> int:\n    return x + {i}\n"
TOML = '[function]\nhandler = "handler:{handler}"\n[queue]\nname = "{queue}"\n'


def folder(root: Path, name: str, code: str, toml: str, weights: int = 0) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "handler.py").write_text(code)
    (path / "function.toml").write_text(toml)
    if weights:
        (path / "weights.bin").write_bytes(os.urandom(weights))
    return path


def push(client: httpx.Client, path: Path, name: str) -> dict[str, Any]:
    bundle = pack(path, 64 * 1024 * 1024)
    response = client.put(
        f"/functions/{name}",
        content=bundle.data,
        headers={"content-type": "application/zip", "Prefer": "wait=60"},
    )
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


def first_answer(client: httpx.Client, name: str, expected: int) -> None:
    while True:
        r = client.post(f"/functions/{name}/invoke", params={"wait": 30}, json={"input": 1})
        if r.status_code == 200 and r.json().get("output") == expected:
            return
        assert r.status_code in (200, 202, 404, 503), r.text
        time.sleep(0.005)


def push_deploy_times(base: str, root: Path, n: int = PUSHES) -> dict[str, float]:
    """Seconds from packing a folder the API cannot see to its first answer (realtime)."""
    seconds = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(n):
            name = f"pushed{i}-{time.monotonic_ns()}"
            path = folder(
                root / "laptop",
                name,
                SMALL.format(i=i),
                TOML.format(handler="run", queue="realtime"),
            )
            start = time.perf_counter()
            push(client, path, name)
            first_answer(client, name, 1 + i)
            seconds.append(time.perf_counter() - start)
            client.delete(f"/functions/{name}")
    return {"p50": statistics.median(seconds), "max": max(seconds)}


def fresh_worker(config: Path, root: Path, cache: Path, client: redis.Redis) -> Process:
    """A worker on the batch queue with an empty version cache (a new machine)."""
    before = set(client.keys("conveyor:worker:*"))
    proc = Process(
        conveyor("worker", "--queues", "batch", "--concurrency", "1"),
        config,
        root / f"fetch-worker-{cache.name}.log",
        env={"CONVEYOR_STORE__CACHE_DIR": str(cache)},
    )
    wait_for(lambda: set(client.keys("conveyor:worker:*")) - before, 30, "fetch worker")
    return proc


def fetch_latency(base: str, config: Path, root: Path, redis_url: str) -> dict[str, float]:
    """First invocation of a version deployed after the worker started, so its process must
    fetch, unpack, import and set it up: a 20 MiB bundle, and a few hundred bytes."""
    client = redis.Redis.from_url(redis_url)
    stamp = time.monotonic_ns()
    worker = fresh_worker(config, root, root / f"cache-{stamp}", client)
    out: dict[str, float] = {}
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            # A process's first task pays for warming up; neither measured one should.
            for label, weights in (("warm-up", 0), ("small", 0), ("heavy", WEIGHTS)):
                name = f"fetch-{label}-{stamp}"
                code = HEAVY if weights else SMALL.format(i=0)
                handler = "Model" if weights else "run"
                path = folder(
                    root / "laptop",
                    name,
                    code,
                    TOML.format(handler=handler, queue="batch"),
                    weights,
                )
                push(http, path, name)
                expected = weights + 1 if weights else 1
                start = time.perf_counter()
                first_answer(http, name, expected)
                out[f"{label}_first"] = time.perf_counter() - start
                start = time.perf_counter()
                first_answer(http, name, expected)
                out[f"{label}_second"] = time.perf_counter() - start
                http.delete(f"/functions/{name}")
    finally:
        worker.stop()
    return out


def memory_per_version(base: str, root: Path, redis_url: str) -> dict[str, float]:
    """Redis memory per stored version (its bundle and its record, as MEMORY USAGE counts
    them: allocator size classes included), code only and with 20 MiB of weights."""
    client = redis.Redis.from_url(redis_url)
    out = {}
    with httpx.Client(base_url=base, timeout=120) as http:
        for label, weights in (("code", 0), ("weights", WEIGHTS)):
            name = f"memory-{label}-{time.monotonic_ns()}"
            for i in range(MEMORY_VERSIONS):
                path = folder(
                    root / "laptop" / f"v{i}",
                    name,
                    HEAVY if weights else SMALL.format(i=i),
                    TOML.format(handler="Model" if weights else "run", queue="batch"),
                    weights,
                )
                push(http, path, name)
            keys = [
                *client.keys(f"conveyor:bundle:{name}:*"),
                *client.keys(f"conveyor:function:{name}:version:*"),
            ]
            assert len(keys) == 2 * MEMORY_VERSIONS, keys
            used = sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)
            out[label] = used / MEMORY_VERSIONS
            http.delete(f"/functions/{name}")
    return out
