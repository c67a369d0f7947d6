"""`make bench`: Conveyor against raw Celery, every figure a ratio against a baseline
measured in the same run, on the same Redis, with the same worker pool (prefork, one
process). Starts its own Redis, API and workers; prints one table and JSON lines.

BENCH_RUNS (default 3) sets how many times each scenario runs; medians are reported.
BENCH_ONLY=store (or embed: the real model; coldstart; request: the API's cost per
invocation and [api] workers = 2; failover: [redis] min_replicas and BENCH_FAILOVERS
(default 10) kills of the primary; files: the image example and a 10 MiB file; streams:
a generator's chunks through SSE; pipelines; limits: echo with every [limits] key set
against echo, and echo against the code before the limits, BENCH_LIMITS_BASELINE;
hardening: Redis's longest block around the widest fan-out, and echo against the code
before the hardening, BENCH_HARDENING_BASELINE; environments: a function's own environment
against the platform's) runs those rows alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench import environments, hardening, images, pipelines, streams
from bench.access import Receiver, keyed_config, make_key, webhook_load
from bench.apicost import (
    BASELINE_REF,
    BASELINE_TARGET,
    api_children,
    baseline_platform,
    cpu_per_call,
    cpu_seconds,
    env_with_path,
    with_api_workers,
)
from bench.coldstart import autoscaled_first_result, first_result, model_load
from bench.embed import CLIENTS as EMBED_CLIENTS
from bench.embed import OFFLINE, REQUESTS, SeedService, inprocess, seed_load, sentence
from bench.failover import failover_losses, replicated_rates
from bench.maps import (
    big_upload,
    features,
    job_rate,
    mlp_in_process,
    ndjson_lines,
    singles_during_job,
)
from bench.measure import pct, rss_mib
from bench.store import fetch_latency, memory_per_version, push_deploy_times
from conveyor.webhooks.signing import new_secret
from tests.support import (
    BIN,
    UV_CACHE,
    Process,
    RedisServer,
    child_pids,
    free_port,
    start_api,
    start_worker,
    wait_for,
    write_settings,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
FAILOVERS = int(os.environ.get("BENCH_FAILOVERS", "10"))
ROUND_TRIPS = 300
BURST = 2000
CLIENTS = 32
BATCH_CLIENTS = 64
BATCH_REQUESTS = 1500
BACKLOG = 500
DEPLOYS = 10
MAP_ITEMS = 100_000
MLP_MAP_ITEMS = 20_000
UPLOAD_ITEMS = 1_000_000
# main before issue 27 (the limits): what a function without limits costs against it
LIMITS_BASELINE = os.environ.get("BENCH_LIMITS_BASELINE", "aade902")
# The code before the hardening of the new surfaces (portable JSON, ownership, quotas).
HARDENING_BASELINE = os.environ.get("BENCH_HARDENING_BASELINE", "e1eb12b")


@dataclass
class Row:
    scenario: str
    metric: str
    conveyor: float
    baseline: float | None
    unit: str
    target: str = ""
    ok: bool | None = None

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.conveyor / self.baseline


@dataclass
class Platform:
    """Redis, a Conveyor API and worker, and a raw Celery worker, in one temp directory."""

    root: Path
    settings: str = ""  # more deploy.toml tables
    env: dict[str, str] | None = None  # of its processes (PYTHONPATH: a baseline's code)
    redis: RedisServer = field(init=False)
    procs: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.redis = RedisServer(self.root / "redis").start()
        self.functions = self.root / "functions"
        shutil.copytree(HERE / "functions", self.functions)
        # The baselines of batching: the same functions with batching off.
        for name in ("mlp", "embed"):
            nobatch = self.functions / f"{name}-nobatch"
            shutil.copytree(self.functions / name, nobatch)
            manifest = (nobatch / "function.toml").read_text()
            (nobatch / "function.toml").write_text(manifest.split("[batching]")[0])
        self.config = write_settings(
            self.root / "deploy.toml",
            self.redis.url,
            self.functions,
            f'[webhooks]\nsecret = "{new_secret()}"\nallow_networks = ["127.0.0.0/8"]\n'
            + self.settings,
        )
        port = free_port()
        api, self.base = start_api(self.config, self.root / "api.log", port, self.env)
        self.api = api
        self.procs.append(api)

    def worker(self, *args: str) -> Process:
        proc = start_worker(
            self.config,
            self.root / f"worker{len(self.procs)}.log",
            *args,
            redis_client=self.redis.client(),
            env=self.env,
        )
        self.procs.append(proc)
        return proc

    def raw_worker(self) -> Process:
        proc = Process(
            [
                str(BIN / "celery"),
                "-A",
                "raw_celery",
                "worker",
                "--pool=prefork",
                "--concurrency=1",
                "-Q",
                "raw",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=WARNING",
            ],
            self.config,
            self.root / "raw.log",
            {"BENCH_REDIS_URL": self.redis.url},
            HERE,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: Process) -> None:
        proc.stop()
        self.procs.remove(proc)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.redis.stop()


@contextmanager
def raw_celery(url: str) -> Iterator[Any]:
    os.environ["BENCH_REDIS_URL"] = url
    from bench import raw_celery as module  # reads BENCH_REDIS_URL as it is imported

    module.app.conf.broker_url = url
    module.app.conf.result_backend = url
    yield module


def median_of(runs: int, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    samples = [measure() for _ in range(runs)]
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


# -- scenarios ------------------------------------------------------------------------


def conveyor_round_trip(base: str, n: int = ROUND_TRIPS) -> dict[str, float]:
    async def run() -> list[float]:
        times = []
        async with aiohttp.ClientSession(base) as client:
            for i in range(n):
                start = time.perf_counter()
                async with client.post("/functions/echo/invoke?wait=5", json={"input": i}) as r:
                    body = await r.json()
                times.append((time.perf_counter() - start) * 1000)
                assert r.status == 200 and body["output"] == i, body
        return times

    times = asyncio.run(run())
    return {"p50": pct(times, 0.5), "p99": pct(times, 0.99)}


def raw_round_trip(raw: Any, n: int = ROUND_TRIPS) -> dict[str, float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        assert raw.echo.delay(i).get(timeout=30) == i
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": pct(times, 0.5), "p99": pct(times, 0.99)}


async def _http_load(
    base: str,
    name: str,
    make_input: Callable[[int], Any],
    total: int,
    clients: int,
    *,
    one_call: bool = False,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """``clients`` concurrent clients, each: submit, then long-poll the result; or, with
    ``one_call``, invoke with ?wait and take the result from that answer."""
    latencies: list[float] = []
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers) as client:

        async def one_client() -> None:
            for i in counter:
                start = time.perf_counter()
                url = f"/functions/{name}/invoke" + ("?wait=60" if one_call else "")
                async with client.post(url, json={"input": make_input(i)}) as r:
                    done = await r.json()
                    assert r.status == (200 if one_call else 202), done
                if not one_call:
                    async with client.get(done["result_url"] + "?wait=60") as r:
                        done = await r.json()
                assert done["status"] == "succeeded", done
                latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {"rate": total / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


def conveyor_throughput(base: str) -> dict[str, float]:
    return asyncio.run(_http_load(base, "echo", lambda i: i, BURST, CLIENTS))


def raw_throughput(raw: Any) -> dict[str, float]:
    start = time.perf_counter()
    sent = [(time.perf_counter(), raw.echo.delay(i)) for i in range(BURST)]
    latencies = []
    for i, (at, result) in enumerate(sent):
        assert result.get(timeout=120) == i
        latencies.append((time.perf_counter() - at) * 1000)
    elapsed = time.perf_counter() - start
    return {"rate": BURST / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


def mlp_load(base: str, name: str) -> dict[str, float]:
    def features(i: int) -> dict[str, list[float]]:
        return {"x": [((i * 7 + j) % 13) / 13 for j in range(16)]}

    return asyncio.run(_http_load(base, name, features, BATCH_REQUESTS, BATCH_CLIENTS))


def deploy_times(base: str, functions: Path, n: int = DEPLOYS) -> dict[str, float]:
    seconds = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(n):
            name = f"deployed{i}-{time.monotonic_ns()}"
            folder = functions / name
            start = time.perf_counter()
            folder.mkdir()
            (folder / "handler.py").write_text(f"def run(x: int) -> int:\n    return x + {i}\n")
            (folder / "function.toml").write_text(
                '[function]\nhandler = "handler:run"\n[queue]\nname = "realtime"\n'
            )
            while True:
                r = client.post(f"/functions/{name}/invoke", params={"wait": 5}, json={"input": 1})
                if r.status_code == 200 and r.json().get("output") == 1 + i:
                    break
                time.sleep(0.005)
            seconds.append(time.perf_counter() - start)
            shutil.rmtree(folder)
    return {"p50": statistics.median(seconds), "max": max(seconds)}


def priority_time(base: str, task_seconds: float) -> dict[str, float]:
    """Seconds until a priority-9 invocation finishes behind BACKLOG priority-1 ones."""
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(BACKLOG):
            body = {"input": task_seconds, "priority": 1}
            assert client.post("/functions/sleep/invoke", json=body).status_code == 202
        start = time.perf_counter()
        r = client.post(
            "/functions/sleep/invoke",
            params={"wait": 60},
            json={"input": task_seconds, "priority": 9},
        )
        elapsed = time.perf_counter() - start
        assert r.status_code == 200, r.text
    return {"seconds": elapsed}


def forget_jobs(redis_url: str) -> None:
    """Drop finished map jobs' results, so later scenarios meet the Redis they used to."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("conveyor:map*", count=1000):
        client.delete(key)


def drain(redis_url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.keys(f"{queue}*"):
        client.delete(key)


# -- the run ----------------------------------------------------------------------------


def main() -> int:
    # Per-invocation info logs are a deployment choice; both sides run at warning.
    os.environ["CONVEYOR_LOG__LEVEL"] = "warning"
    os.environ.update(OFFLINE)  # the real model loads from its package, never a hub
    rows: list[Row] = []
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    env = Platform(root)
    try:
        worker = env.worker("--queues", "realtime,default", "--concurrency", "1")
        chosen = only_rows(env, root, worker)
        if chosen is not None:
            return report(chosen) or 0
        raw_worker = env.raw_worker()
        with raw_celery(env.redis.url) as raw:
            wait_for(lambda: raw.echo.delay(0).get(timeout=10) == 0, 30, "raw celery worker")
            conveyor_round_trip(env.base, 50)  # warm both paths
            raw_round_trip(raw, 50)

            rt = median_of(RUNS, lambda: conveyor_round_trip(env.base))
            rt_raw = median_of(RUNS, lambda: raw_round_trip(raw))
            rows += [
                Row("round trip", "p50", rt["p50"], rt_raw["p50"], "ms", "≤ 1.5×"),
                Row("round trip", "p99", rt["p99"], rt_raw["p99"], "ms"),
            ]
            rows[-2].ok = rows[-2].ratio is not None and rows[-2].ratio <= 1.5

            api_idle = rss_mib(env.api.pid)[0]
            child = child_pids(worker.pid)[0]
            worker_idle = rss_mib(child)[0]
            tp = median_of(RUNS, lambda: conveyor_throughput(env.base))
            tp_raw = median_of(RUNS, lambda: raw_throughput(raw))
            rows += [
                Row(
                    "throughput",
                    "completed/s",
                    tp["rate"],
                    tp_raw["rate"],
                    "/s",
                    "≥ 1.0×",
                    tp["rate"] >= tp_raw["rate"],
                ),
                Row("throughput", "p50", tp["p50"], tp_raw["p50"], "ms"),
                Row(
                    "throughput",
                    "p99",
                    tp["p99"],
                    tp_raw["p99"],
                    "ms",
                    "p99 ≤ 5× p50",
                    tp["p99"] <= 5 * tp["p50"],
                ),
            ]
            api_peak = rss_mib(env.api.pid)[1]
            worker_peak = max(rss_mib(worker.pid)[1], rss_mib(child_pids(worker.pid)[0])[1])
            rows += [
                Row("memory", "API idle", api_idle, None, "MiB"),
                Row(
                    "memory", "API peak under load", api_peak, None, "MiB", "≤ 150", api_peak <= 150
                ),
                Row("memory", "worker process idle", worker_idle, None, "MiB"),
                Row("memory", "worker peak under load", worker_peak, None, "MiB"),
            ]

            rows += request_path_rows(env, root)
            rows += [
                *map_rows(env, tp["rate"]),
                *pipeline_rows(env),
                *limit_rows(env, root),
                *hardening_rows(env, root),
                *environment_rows(env, root),
            ]
            rows += access_rows(env, root)
            rows.append(metrics_row(env, root))

            one = median_of(RUNS, lambda: {"s": _one_sleep(env.base, 0.02)})["s"]
            prio = median_of(RUNS, lambda: priority_time(env.base, 0.02))["seconds"]
            rows.append(
                Row("priority", "p9 behind 500 p1", prio, one, "s", "≤ 3×", prio <= 3 * one)
            )
            drain(env.redis.url, "default")

            dep = median_of(1, lambda: deploy_times(env.base, env.functions))["p50"]
            rows += [
                Row("deploy", "folder → first invoke p50", dep, None, "s", "≤ 1 s", dep <= 1.0),
                *store_rows(env, root, dep),
                *file_rows(env, raw),
            ]
        env.stop(raw_worker)
        env.stop(worker)
        rows += upload_rows(env, root) + stream_rows(env)

        if os.environ.get("BENCH_SKIP_BATCHING"):
            return report(rows) or 0
        rows += batching_rows(env)
        rows += image_rows(env, root)
        rows += embed_rows(env, root) + coldstart_rows(env, root)
        rows += replication_rows(root)
    finally:
        env.close()
        shutil.rmtree(root, ignore_errors=True)
    report(rows)
    return 0 if all(r.ok is not False for r in rows) else 1


def only_rows(env: Platform, root: Path, worker: Process) -> list[Row] | None:
    """The rows BENCH_ONLY names, or None for the whole bench."""
    only = os.environ.get("BENCH_ONLY", "")
    if only == "store":
        return store_rows(env, root)
    if only == "request":
        asyncio.run(_http_load(env.base, "echo", lambda i: i, 300, 8))  # warm
        return request_path_rows(env, root)
    if only == "failover":
        env.stop(worker)
        return replication_rows(root)
    if only == "files":
        env.raw_worker()
        with raw_celery(env.redis.url) as raw:
            wait_for(lambda: raw.echo.delay(0).get(timeout=10) == 0, 30, "raw celery worker")
            rows = file_rows(env, raw)
        env.stop(worker)
        return rows + image_rows(env, root)
    if only == "streams":
        env.stop(worker)
        return stream_rows(env)
    if only == "pipelines":
        return pipeline_rows(env)
    if only == "limits":
        return limit_rows(env, root)
    if only == "hardening":
        return hardening_rows(env, root)
    if only == "environments":
        return environment_rows(env, root)
    alone = {"embed": embed_rows, "coldstart": coldstart_rows}.get(only)
    if alone is None:
        return None
    env.stop(worker)  # these start their own workers
    return alone(env, root)


def replication_rows(root: Path) -> list[Row]:
    """[redis] min_replicas 1 against 0 (bench/failover.py): echo throughput on a primary
    with one replica, and what FAILOVERS kills of the primary lose under load."""
    rates = replicated_rates(root / "replicated", RUNS, conveyor_throughput)
    on, off = (statistics.median(s["rate"] for s in rates[n]) for n in (1, 0))
    rows = [Row("replication", "min_replicas 1 vs 0", on, off, "/s")]
    for wanted in (0, 1):
        losses = failover_losses(root / f"failover{wanted}", wanted, FAILOVERS)
        shown = {**losses, "lost ids": losses["lost ids"][:5]}
        print(f"failover, min_replicas {wanted}, {FAILOVERS} kills: {shown}", flush=True)
        rows += [
            Row(
                "failover",
                f"min_replicas {wanted}: lost of {losses['accepted']:.0f}",
                losses["lost"],
                None,
                "",
                "0" if wanted else "",
                losses["lost"] == 0 if wanted else None,
            ),
            Row(
                "failover",
                f"min_replicas {wanted}: kill → 202",
                losses["first 202 after kill (median s)"],
                None,
                "s",
            ),
        ]
    return rows


def batching_rows(env: Platform) -> list[Row]:
    """The mlp with batching on against off, and a map job over it."""
    mlp_worker = env.worker("--queues", "batch", "--concurrency", "1")
    for name in ("mlp", "mlp-nobatch"):  # warm up: set-up, first batches
        asyncio.run(_http_load(env.base, name, lambda i: {"x": [0.0] * 16}, 200, 8))
    on = median_of(RUNS, lambda: mlp_load(env.base, "mlp"))
    off = median_of(RUNS, lambda: mlp_load(env.base, "mlp-nobatch"))
    rows = [
        Row(
            "batching",
            "completed/s",
            on["rate"],
            off["rate"],
            "/s",
            "≥ 4×",
            on["rate"] >= 4 * off["rate"],
        ),
        Row("batching", "p50", on["p50"], off["p50"], "ms"),
        Row("batching", "p99", on["p99"], off["p99"], "ms", "≤ 1×", on["p99"] <= off["p99"]),
    ]
    rows.append(mlp_map_row(env))
    env.stop(mlp_worker)
    return rows


def file_rows(env: Platform, raw: Any) -> list[Row]:
    """A 10 MiB file from the upload's first byte to its hash in the result, against the
    same bytes SET in Redis by hand and read back by a Celery task."""
    data = images.file_bytes()
    images.upload_to_result(env.base, data)  # warm both paths
    images.by_hand(raw, env.redis.url, data)
    ours = median_of(RUNS * 3, lambda: {"s": images.upload_to_result(env.base, data)})["s"]
    hand = median_of(RUNS * 3, lambda: {"s": images.by_hand(raw, env.redis.url, data)})["s"]
    return [Row("files", "10 MiB: upload to result", ours * 1000, hand * 1000, "ms")]


def stream_rows(env: Platform) -> list[Row]:
    """A generator yielding 200 chunks 5 ms apart (bench/functions/ticker): the first
    chunk's added latency, one stream's rate against the generator's own, and the API's
    CPU per chunk with 100 streams at once (eight worker processes run them)."""
    worker = env.worker("--queues", "default", "--concurrency", "8")
    streams.first_chunk(env.base, 10)  # warm
    first = median_of(RUNS, lambda: streams.first_chunk(env.base))
    own = median_of(RUNS, lambda: {"rate": streams.own_rate()})["rate"]
    through = median_of(RUNS, lambda: streams.one_stream(env.base))["rate"]
    pids = api_children(env.api.pid)
    before = sum(cpu_seconds(p) for p in pids)
    many = asyncio.run(streams.many_streams(env.base))
    cpu = (sum(cpu_seconds(p) for p in pids) - before) / many["chunks"] * 1e6
    env.stop(worker)
    return [
        Row(
            "streams",
            "first chunk: added p50",
            first["p50"],
            None,
            "ms",
            "≤ 10",
            first["p50"] <= 10,
        ),
        Row("streams", "first chunk: added p99", first["p99"], None, "ms"),
        Row(
            "streams", "chunks/s, one stream", through, own, "/s", "≥ 0.95×", through >= 0.95 * own
        ),
        Row("streams", "100 streams: API CPU/chunk", cpu, None, "µs"),
        Row("streams", "100 streams: chunks/s", many["chunks"] / many["seconds"], None, "/s"),
    ]


def image_rows(env: Platform, root: Path) -> list[Row]:
    """functions/shapes with batching, over uploaded pictures, against the model's own
    batched speed in a plain process on the same pictures."""
    shutil.copytree(REPO / "functions" / "shapes", env.functions / "shapes")
    pictures = root / "pictures"
    images.draw_pictures(pictures)
    limit = median_of(RUNS, lambda: {"rate": images.inprocess(pictures, 32)})["rate"]
    worker = env.worker("--queues", "realtime", "--concurrency", "1")
    wait_for(
        lambda: httpx.get(f"{env.base}/functions/shapes").json().get("status") == "ready",
        60,
        "shapes deployed",
    )
    urls = images.upload_all(env.base, sorted(pictures.glob("*.png")))

    def load(count: int) -> dict[str, float]:
        return asyncio.run(_http_load(env.base, "shapes", lambda i: {"image": urls[i]}, count, 64))

    load(128)  # set-up and the first batches
    got = median_of(RUNS, lambda: load(len(urls)))
    env.stop(worker)
    return [
        Row(
            "image model",
            "batching on",
            got["rate"],
            limit,
            "/s",
            "≥ 0.9×",
            got["rate"] >= 0.9 * limit,
        ),
        Row("image model", "p50 (64 clients)", got["p50"], None, "ms"),
    ]


def embed_rows(env: Platform, root: Path) -> list[Row]:
    """A real transformer (bench/embed.py): Conveyor batching on and off against the
    model's own limits and a hand-written FastAPI + Celery service."""
    batch = 32
    limit_1 = median_of(RUNS, lambda: {"rate": inprocess(300, 1)})["rate"]
    limit_b = median_of(RUNS, lambda: {"rate": inprocess(1024, batch)})["rate"]
    worker = env.worker("--queues", "batch", "--concurrency", "1")
    for name in ("embed", "embed-nobatch"):  # set-up (the model's import), first batches
        asyncio.run(_http_load(env.base, name, sentence, 100, 8))
    on = median_of(RUNS, lambda: _embed_load(env.base, "embed"))
    off = median_of(RUNS, lambda: _embed_load(env.base, "embed-nobatch"))
    env.stop(worker)
    seed = SeedService(root, env.config, env.redis.url)
    try:
        seed.warm()
        hand = median_of(RUNS, lambda: seed_load(seed.base))
    finally:
        seed.stop()
    return [
        Row(
            "real model",
            "batching on",
            on["rate"],
            limit_b,
            "/s",
            "≥ 0.9×",
            on["rate"] >= 0.9 * limit_b,
        ),
        Row(
            "real model",
            "batching off",
            off["rate"],
            limit_1,
            "/s",
            "≥ 0.9×",
            off["rate"] >= 0.9 * limit_1,
        ),
        Row(
            "real model",
            "on: p99 vs p50",
            on["p99"],
            on["p50"],
            "ms",
            "≤ 2×",
            on["p99"] <= 2 * on["p50"],
        ),
        Row(
            "real model",
            "off: p99 vs p50",
            off["p99"],
            off["p50"],
            "ms",
            "≤ 2×",
            off["p99"] <= 2 * off["p50"],
        ),
        Row("real model", "on vs FastAPI+Celery", on["rate"], hand["rate"], "/s"),
        Row("real model", "off vs FastAPI+Celery", off["rate"], hand["rate"], "/s"),
        Row("real model", "FastAPI+Celery p50", hand["p50"], None, "ms"),
    ]


def coldstart_rows(env: Platform, root: Path) -> list[Row]:
    """`conveyor worker` start to the first result, and scaling from zero, against the
    model's own load (bench/coldstart.py). No other worker may be running."""
    shutil.copytree(HERE.parent / "functions" / "iris", env.functions / "iris")
    wait_for(lambda: httpx.get(f"{env.base}/functions/iris").json()["status"] == "ready", 30)
    flower = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
    rows = [
        _cold_row(env, root, ("iris", "handler:Iris", flower, "realtime")),
        _cold_row(env, root, ("embed", "handler:Embed", "hi", "batch")),
    ]
    log = root / "cold-autoscale.log"
    auto = median_of(
        RUNS,
        lambda: {"s": autoscaled_first_result(env.base, env.config, log, queue="batch")},
    )["s"]
    rows.append(Row("cold start", "embed: autoscale 0,1 → 1st", auto, rows[-1].baseline, "s"))
    return rows


def _cold_row(env: Platform, root: Path, case: tuple[str, str, Any, str]) -> Row:
    name, handler, payload, queue = case
    model_load(env.functions / name, handler)  # both sides then read the files from memory
    load = median_of(RUNS, lambda: {"s": model_load(env.functions / name, handler)})["s"]
    log = root / f"cold-{name}.log"
    args = ("--queues", queue, "--concurrency", "1")
    cold = median_of(
        RUNS, lambda: {"s": first_result(env.base, env.config, log, (name, payload), *args)}
    )["s"]
    return Row(
        "cold start",
        f"{name}: start → 1st result",
        cold,
        load,
        "s",
        "≤ load + 1 s",
        cold <= load + 1,
    )


def _embed_load(base: str, name: str) -> dict[str, float]:
    return asyncio.run(_http_load(base, name, sentence, REQUESTS, EMBED_CLIENTS))


def store_rows(env: Platform, root: Path, dropped: float | None = None) -> list[Row]:
    """Deploy-to-invokable pushed vs dropped; the first invocation on a worker that fetches
    a 20 MiB bundle vs a tiny one; Redis memory per stored version (bench/store.py)."""
    if dropped is None:
        dropped = median_of(1, lambda: deploy_times(env.base, env.functions))["p50"]
    pushed = median_of(1, lambda: push_deploy_times(env.base, root))["p50"]
    fetch = median_of(RUNS, lambda: fetch_latency(env.base, env.config, root, env.redis.url))
    memory = memory_per_version(env.base, root, env.redis.url)
    return [
        Row("store", "push → first invoke p50", pushed, dropped, "s", "≤ 1 s", pushed <= 1.0),
        Row("store", "1st invoke, 20 MiB fetch", fetch["heavy_first"], fetch["small_first"], "s"),
        Row("store", "2nd invoke, same", fetch["heavy_second"], fetch["small_second"], "s"),
        Row("store", "Redis per version: code", memory["code"] / 1024, None, "KiB"),
        Row("store", "Redis per version: +20 MiB", memory["weights"] / 2**20, None, "MiB"),
    ]


def access_rows(env: Platform, root: Path) -> list[Row]:
    """API keys on vs off (throughput, alternated), and webhook delivery latency."""
    keyed = keyed_config(env.config)
    keyed_api, keyed_base = start_api(keyed, root / "api-keys.log", free_port())
    env.procs.append(keyed_api)
    auth = {"Authorization": f"Bearer {make_key(keyed, BIN / 'conveyor')}"}
    off, on = [], []
    for _ in range(RUNS):
        off.append(asyncio.run(_http_load(env.base, "echo", lambda i: i, BURST, CLIENTS))["rate"])
        load = _http_load(keyed_base, "echo", lambda i: i, BURST, CLIENTS, headers=auth)
        on.append(asyncio.run(load)["rate"])
    env.stop(keyed_api)
    rate_on, rate_off = statistics.median(on), statistics.median(off)

    deliverer = Process([str(BIN / "conveyor"), "webhooks"], env.config, root / "webhooks.log")
    env.procs.append(deliverer)
    receiver = Receiver(free_port()).start()
    hooks = median_of(RUNS, lambda: webhook_load(env.base, receiver))
    env.stop(deliverer)
    return [
        Row(
            "auth",
            "throughput keys / none",
            rate_on,
            rate_off,
            "/s",
            "≥ 0.95×",
            rate_on >= 0.95 * rate_off,
        ),
        Row("webhooks", "result → receiver p50", hooks["p50"], None, "ms"),
        Row("webhooks", "result → receiver p99", hooks["p99"], None, "ms"),
    ]


def request_path_rows(env: Platform, root: Path) -> list[Row]:
    """API CPU per echo invocation (submit + result) against the API before issue 14, and
    throughput with ``[api] workers = 2`` against 1; alternated, medians (bench/apicost.py).
    """

    def load(base: str) -> Callable[[], Any]:
        return lambda: _http_load(base, "echo", lambda i: i, BURST, CLIENTS)

    two_api, two_base = start_api(with_api_workers(env.config, 2), root / "api-2.log", free_port())
    env.procs.append(two_api)
    old = baseline_platform(root / "baseline")
    if old is not None:
        old_api, old_base = start_api(
            env.config, root / "api-baseline.log", free_port(), env_with_path(old)
        )
        env.procs.append(old_api)
    now: list[dict[str, float]] = []
    before: list[dict[str, float]] = []
    two: list[dict[str, float]] = []
    for _ in range(RUNS):
        now.append(cpu_per_call([env.api.pid], load(env.base), BURST))
        if old is not None:
            before.append(cpu_per_call([old_api.pid], load(old_base), BURST))
        two.append(cpu_per_call(api_children(two_api.pid), load(two_base), BURST))
    env.stop(two_api)
    if old is not None:
        env.stop(old_api)

    def median(samples: list[dict[str, float]], key: str) -> float:
        return statistics.median(s[key] for s in samples)

    cpu, rate = median(now, "cpu_ms"), median(now, "rate")
    rows = []
    if before:
        cpu_before = median(before, "cpu_ms")
        rows += [
            Row(
                "request path",
                f"API CPU/invocation vs {BASELINE_REF}",
                cpu,
                cpu_before,
                "ms",
                f"≤ {BASELINE_TARGET}×",
                cpu <= BASELINE_TARGET * cpu_before,
            ),
            Row(
                "request path", f"throughput vs {BASELINE_REF}", rate, median(before, "rate"), "/s"
            ),
        ]
    rows.append(Row("request path", "[api] workers 2 vs 1", median(two, "rate"), rate, "/s"))
    rows.append(Row("request path", "CPU/invocation, 2 vs 1", median(two, "cpu_ms"), cpu, "ms"))
    return rows


def map_rows(env: Platform, single_rate: float) -> list[Row]:
    """A 100,000-item job over echo (items/s from the upload's first byte to the job's end)
    against single invocations over HTTP; echo round trips while such a job runs."""
    body = b"".join(ndjson_lines(MAP_ITEMS, lambda i: {"i": i, "text": f"row {i}"}))
    rate = median_of(RUNS, lambda: job_rate(env.base, "echo", body, MAP_ITEMS))["rate"]
    during = median_of(RUNS, lambda: singles_during_job(env.base, body))
    forget_jobs(env.redis.url)
    return [
        Row("map", "100k echo items/s", rate, single_rate, "/s", "≥ 5×", rate >= 5 * single_rate),
        Row("map", "single p50 during job", during["p50"], during["idle_p50"], "ms"),
        Row("map", "single p99 during job", during["p99"], during["idle_p99"], "ms"),
    ]


def pipeline_rows(env: Platform) -> list[Row]:
    """A 3-step chain of echo against three sequential invocations over HTTP; a
    10,000-element fan-out and fan-in over echo against a map job of echo over the same
    items (bench/pipelines.py); the one worker process of the main scenarios."""
    pipelines.chain(env.base, 20)  # warm
    chained = median_of(RUNS, lambda: pipelines.chain(env.base))
    items = pipelines.FAN_ITEMS
    body = b"".join(ndjson_lines(items, lambda i: {"i": i, "text": f"row {i}"}))
    rates: dict[str, list[float]] = {"fan": [], "map": []}
    for _ in range(RUNS):  # in turn, so both see the same machine
        rates["fan"].append(pipelines.fan(env.base)["rate"])
        rates["map"].append(job_rate(env.base, "echo", body, items)["rate"])
    fanned, mapped = (statistics.median(rates[k]) for k in ("fan", "map"))
    forget_jobs(env.redis.url)
    apart = {"p50": chained["apart_p50"], "p99": chained["apart_p99"]}
    ok = chained["p50"] <= apart["p50"]
    return [
        Row("pipelines", "3-step chain p50", chained["p50"], apart["p50"], "ms", "≤ 1.0×", ok),
        Row("pipelines", "3-step chain p99", chained["p99"], apart["p99"], "ms"),
        Row(
            "pipelines",
            "10k fan-out + fan-in /s",
            fanned,
            mapped,
            "/s",
            "≥ 0.9×",
            fanned >= 0.9 * mapped,
        ),
    ]


def limit_rows(env: Platform, root: Path) -> list[Row]:
    """What the limits' checks cost on the throughput load: over ``echolimited`` (every
    [limits] key set, none reached) against ``echo``, on the one worker process of the main
    scenarios; and ``echo`` (no limits) against ``echo`` on the code before the limits
    (:data:`LIMITS_BASELINE`: its API and worker, on a Redis of their own), in turn."""
    conveyor_throughput(env.base)  # warm
    old = baseline_platform(root / "before-limits", LIMITS_BASELINE)
    before = None
    if old is not None:
        before = Platform(root / "before-limits-run", env=env_with_path(old))
        before.worker("--queues", "realtime,default", "--concurrency", "1")
        conveyor_throughput(before.base)  # warm
    loads = {"echo": (env.base, "echo"), "echolimited": (env.base, "echolimited")}
    if before is not None:
        loads["before"] = (before.base, "echo")
    rates: dict[str, list[float]] = {name: [] for name in loads}
    try:
        for _ in range(RUNS):  # in turn, so each sees the same machine
            for name, (base, function) in loads.items():
                load = _http_load(base, function, lambda i: i, BURST, CLIENTS)
                rates[name].append(asyncio.run(load)["rate"])
    finally:
        if before is not None:
            before.close()
    limited, plain = (statistics.median(rates[k]) for k in ("echolimited", "echo"))
    rows = [
        Row(
            "limits",
            "all set vs none (/s)",
            limited,
            plain,
            "/s",
            "≥ 0.9×",
            limited >= 0.9 * plain,
        )
    ]
    if "before" in rates:
        was = statistics.median(rates["before"])
        rows.append(
            Row(
                "limits",
                "none set vs before (/s)",
                plain,
                was,
                "/s",
                "≥ 0.97×",
                plain >= 0.97 * was,
            )
        )
    return rows


def hardening_rows(env: Platform, root: Path) -> list[Row]:
    """Redis's longest block (the slowest PING) while the widest fan-out is planned, run
    and cancelled, over a plain function (a map job) and a streaming one (a window of
    invocations), against the slowest while idle (goal: 50 ms at most); and echo's
    throughput against the code before the hardening (:data:`HARDENING_BASELINE`)."""
    rows = []
    for pipeline, kind in (("echofan", "map job"), ("streamfan", "streaming")):
        phases = hardening.fanout_blocks(env.base, env.redis.url, pipeline)
        drain(env.redis.url, "realtime")
        for phase in ("plan", "run", "cancel"):
            worst = phases[phase]
            name = f"10k fan-out ({kind}): {phase}, longest block"
            rows.append(Row("hardening", name, worst, phases["idle"], "ms", "≤ 50 ms", worst <= 50))
    forget_jobs(env.redis.url)
    conveyor_throughput(env.base)  # warm
    old = baseline_platform(root / "before-hardening", HARDENING_BASELINE)
    if old is None:
        return rows
    before = Platform(root / "before-hardening-run", env=env_with_path(old))
    try:
        before.worker("--queues", "realtime,default", "--concurrency", "1")
        conveyor_throughput(before.base)  # warm

        def load(base: str) -> Callable[[], float]:
            return lambda: asyncio.run(_http_load(base, "echo", lambda i: i, BURST, CLIENTS))[
                "rate"
            ]

        rates = hardening.in_turn({"now": load(env.base), "before": load(before.base)}, RUNS)
    finally:
        before.close()
    now, was = statistics.median(rates["now"]), statistics.median(rates["before"])
    rows.append(
        Row("hardening", "echo vs before (/s)", now, was, "/s", "≥ 0.98×", now >= 0.98 * was)
    )
    return rows


def environment_rows(env: Platform, root: Path) -> list[Row]:
    """Functions' own environments against the platform's, on this run: the first answer
    of a new function whose environment must be built (goal: within 5 s), a worker
    process's start in a built environment (goal: within 1 s of the platform's), and echo
    in its own environment (goal: at least 0.97 times echo without one)."""
    cache = env.root / ".conveyor" / "cache"  # the bench's worker (realtime,default) serves
    environments.warm_uv_cache(UV_CACHE, root / "uv-warm", RUNS)
    environments.first_answer(env.base, env.functions, False, 1)  # warm
    own = environments.first_answer(env.base, env.functions, True, RUNS)
    plain = environments.first_answer(env.base, env.functions, False, RUNS)
    rows = [
        Row("environments", "first answer, environment built", own, plain, "s", "≤ 5 s", own <= 5)
    ]
    environments.write_echo(env.functions, "echoenv", environments.REQUIREMENTS)
    environments.write_echo(env.functions, "echoplain", None)
    built = environments.environment_of(env.base, "echoenv")
    python = str(cache / ".environments" / built / "bin" / "python")
    log = root / "starts.log"
    pycache = {  # as the worker starts it: its bytecode kept in the environment
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(cache / ".environments" / built / ".pycache"),
    }
    mine = environments.start_seconds(
        env.config, log, python, env.redis.url, RUNS, "--environment", built, env=pycache
    )
    theirs = environments.start_seconds(env.config, log, sys.executable, env.redis.url, RUNS)
    rows.append(
        Row("environments", "worker process start", mine, theirs, "s", "≤ +1 s", mine <= theirs + 1)
    )

    def load(name: str) -> Callable[[], float]:
        return lambda: asyncio.run(_http_load(env.base, name, lambda i: i, BURST, CLIENTS))["rate"]

    for name in ("echoenv", "echoplain"):
        asyncio.run(_http_load(env.base, name, lambda i: i, ROUND_TRIPS, CLIENTS))  # warm
    rates = hardening.in_turn({"own": load("echoenv"), "plain": load("echoplain")}, RUNS)
    mine, theirs = statistics.median(rates["own"]), statistics.median(rates["plain"])
    rows.append(
        Row(
            "environments",
            "echo in its environment vs without (/s)",
            mine,
            theirs,
            "/s",
            "≥ 0.97×",
            mine >= 0.97 * theirs,
        )
    )
    return rows


def mlp_map_row(env: Platform) -> Row:
    """A job over the batching mlp against the model's own loop in a plain process."""
    body = b"".join(ndjson_lines(MLP_MAP_ITEMS, features))
    job_rate(env.base, "mlp", body, MLP_MAP_ITEMS)  # warm
    rate = median_of(RUNS, lambda: job_rate(env.base, "mlp", body, MLP_MAP_ITEMS))["rate"]
    alone = median_of(RUNS, lambda: {"rate": mlp_in_process(MLP_MAP_ITEMS, 64)})["rate"]
    return Row("map", "mlp job / in-process", rate, alone, "/s", "≥ 0.9×", rate >= 0.9 * alone)


def upload_rows(env: Platform, root: Path) -> list[Row]:
    """A fresh API takes a 1,000,000-item NDJSON upload (nobody consumes the queue)."""
    api, base = start_api(env.config, root / "api-upload.log", free_port())
    env.procs.append(api)
    try:
        got = big_upload(base, api.pid, env.redis.url, UPLOAD_ITEMS)
    finally:
        env.stop(api)
    drain(env.redis.url, "realtime")
    return [
        Row("map upload", "1M items: API RSS before", got["rss_before"], None, "MiB"),
        Row(
            "map upload",
            "1M items: API peak RSS",
            got["rss_peak"],
            None,
            "MiB",
            "≤ before + 50",
            got["rss_peak"] <= got["rss_before"] + 50,
        ),
        Row("map upload", "1M items: seconds", got["seconds"], None, "s"),
        Row("map upload", "Redis bytes / waiting item", got["redis_per_item"], None, "B"),
        Row("map upload", "its input's JSON", got["input_bytes"], None, "B"),
    ]


def metrics_row(env: Platform, root: Path) -> Row:
    """The throughput load on this platform, and on a second one with [metrics] enabled =
    false (its own Redis, API and worker), alternated."""
    off = Platform(root / "no-metrics", "[metrics]\nenabled = false\n")
    try:
        off.worker("--queues", "realtime,default", "--concurrency", "1")
        on_rates, off_rates = [], []
        for _ in range(RUNS):
            on_rates.append(conveyor_throughput(env.base)["rate"])
            off_rates.append(conveyor_throughput(off.base)["rate"])
    finally:
        off.close()
    on, without = statistics.median(on_rates), statistics.median(off_rates)
    return Row("metrics", "throughput on / off", on, without, "/s", "≥ 0.97×", on >= 0.97 * without)


def _one_sleep(base: str, seconds: float) -> float:
    with httpx.Client(base_url=base, timeout=30) as client:
        start = time.perf_counter()
        r = client.post("/functions/sleep/invoke", params={"wait": 30}, json={"input": seconds})
        assert r.status_code == 200, r.text
        return time.perf_counter() - start


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def report(rows: list[Row]) -> None:
    print(
        f"\nConveyor bench: {machine()}; medians of {RUNS} runs; baseline = raw Celery "
        "(prefork, 1 process) on the same Redis, or batching off\n"
    )
    print(
        f"| {'scenario':<11} | {'metric':<26} | {'Conveyor':>10} | {'baseline':>10} | "
        f"{'ratio':>6} | {'target':<12} | ok |"
    )
    print(f"|{'-' * 13}|{'-' * 28}|{'-' * 12}|{'-' * 12}|{'-' * 8}|{'-' * 14}|----|")
    for r in rows:
        base = f"{r.baseline:.2f}" if r.baseline is not None else "—"
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        ok = {True: "✓", False: "✗", None: ""}[r.ok]
        print(
            f"| {r.scenario:<11} | {r.metric:<26} | {r.conveyor:>7.2f} {r.unit:<3}"
            f"| {base:>10} | {ratio:>6} | {r.target:<12} | {ok:<2} |"
        )
    print()
    for r in rows:
        print(
            json.dumps(
                {
                    "scenario": r.scenario,
                    "metric": r.metric,
                    "conveyor": r.conveyor,
                    "baseline": r.baseline,
                    "ratio": r.ratio,
                    "unit": r.unit,
                    "target": r.target,
                    "ok": r.ok,
                }
            )
        )


if __name__ == "__main__":
    raise SystemExit(main())
