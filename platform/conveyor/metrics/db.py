"""What the platform has done, counted where the records live.

The job scripts (:mod:`conveyor.invocations.records`) count as they change records, in the same
Lua call, so the figures are exact and the same for every API process whatever machine a
worker runs on:

- counters per function: invocations by final status, failures by error type, retries,
  redeliveries (a hash each, ``<function>\\t<label>`` -> count);
- histograms per function: run time (started -> finished), queue wait (accepted -> first
  start), batch size (a hash each, ``<function>\\t<bucket index>`` -> count, ``\\tsum``);
- for the dashboard, 10-second buckets (count, failures, run time histogram per function,
  expiring after :data:`STATS_TTL`) and the last :data:`RECENT` finished invocations.

Reading any of it costs O(functions * buckets), never O(invocations).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors

SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
STATS_BUCKET = 10  # seconds per dashboard bucket
STATS_TTL = 1800  # seconds a dashboard bucket is kept
RECENT = 100


def stats_bucket(now: float | None = None) -> str:
    """The dashboard bucket a change made now is counted in."""
    at = time.time() if now is None else now
    return keyspace.stats_bucket(int(at // STATS_BUCKET) * STATS_BUCKET)


def observe_batch(pipe: redis.client.Pipeline, function: str, size: int) -> None:
    """Count one batch of ``size`` items (queued on a worker's pipeline)."""
    i = next(
        (j for j, bound in enumerate(BATCH_BUCKETS, 1) if size <= bound), len(BATCH_BUCKETS) + 1
    )
    pipe.hincrby(keyspace.METRICS_BATCH_SIZE, f"{function}\t{i}", 1)
    pipe.hincrbyfloat(keyspace.METRICS_BATCH_SIZE, f"{function}\tsum", size)


@dataclass
class Histogram:
    """One function's histogram: cumulative bucket counts by upper bound, sum, count."""

    buckets: list[tuple[float, int]]
    sum: float
    count: int

    @classmethod
    def of(cls, counts: dict[int, int], total: float, bounds: tuple[float, ...]) -> Histogram:
        cumulative, running = [], 0
        for i, bound in enumerate((*bounds, math.inf), 1):
            running += counts.get(i, 0)
            cumulative.append((float(bound), running))
        return cls(cumulative, total, running)

    def quantile(self, q: float) -> float | None:
        """Estimated by linear interpolation inside the bucket, as Prometheus does."""
        if self.count == 0:
            return None
        rank, lower, below = q * self.count, 0.0, 0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 0)
            lower, below = bound, cumulative
        return lower


@dataclass
class Totals:
    """Every counter and histogram, by function."""

    invocations: dict[tuple[str, str], int] = field(default_factory=dict)  # (fn, status)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # (fn, error type)
    retries: dict[str, int] = field(default_factory=dict)
    redeliveries: dict[str, int] = field(default_factory=dict)
    durations: dict[str, Histogram] = field(default_factory=dict)
    queue_waits: dict[str, Histogram] = field(default_factory=dict)
    batch_sizes: dict[str, Histogram] = field(default_factory=dict)
    webhooks_pending: int = 0
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)  # (fn, limit)
    memory: tuple[int, int] = (0, 0)  # Redis: bytes used, its maxmemory (0: none)


def _pairs(raw: dict[str, str]) -> dict[tuple[str, str], int]:
    return {cast(tuple[str, str], tuple(k.split("\t", 1))): int(v) for k, v in raw.items()}


def _histograms(raw: dict[str, str], bounds: tuple[float, ...]) -> dict[str, Histogram]:
    counts: dict[str, dict[int, int]] = defaultdict(dict)
    sums: dict[str, float] = {}
    for key, value in raw.items():
        function, _, part = key.rpartition("\t")
        if part == "sum":
            sums[function] = float(value)
        else:
            counts[function][int(part)] = int(value)
    return {f: Histogram.of(counts[f], sums.get(f, 0.0), bounds) for f in counts}


async def totals(client: aioredis.Redis) -> Totals:
    with broker_errors():
        async with client.pipeline(transaction=False) as pipe:
            for key in (
                keyspace.METRICS_INVOCATIONS,
                keyspace.METRICS_FAILURES,
                keyspace.METRICS_RETRIES,
                keyspace.METRICS_REDELIVERIES,
                keyspace.METRICS_DURATION,
                keyspace.METRICS_QUEUE_WAIT,
                keyspace.METRICS_BATCH_SIZE,
                keyspace.METRICS_REJECTIONS,
            ):
                pipe.hgetall(key)
            pipe.zcard(keyspace.WEBHOOKS_DUE)
            pipe.info("memory")
            *found, pending, memory = await pipe.execute()
    inv, fail, retries, redeliveries, duration, wait, batch, refused = cast(
        list[dict[str, str]], found
    )
    return Totals(
        invocations=_pairs(inv),
        failures=_pairs(fail),
        retries={k: int(v) for k, v in retries.items()},
        redeliveries={k: int(v) for k, v in redeliveries.items()},
        durations=_histograms(duration, SECONDS_BUCKETS),
        queue_waits=_histograms(wait, SECONDS_BUCKETS),
        batch_sizes=_histograms(batch, tuple(float(b) for b in BATCH_BUCKETS)),
        webhooks_pending=int(pending),
        rejections=_pairs(refused),
        memory=(int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))),
    )


@dataclass
class Window:
    """One function over the last minutes, for the dashboard."""

    times: list[float]  # bucket starts, oldest first
    rate: list[float]  # finished per second, per bucket
    errors: list[float]  # failed per second, per bucket
    p50: list[float | None]  # run time, seconds, per bucket
    p95: list[float | None]


async def windows(
    client: aioredis.Redis, minutes: float, now: float | None = None
) -> dict[str, Window]:
    """Per function, the 10-second buckets of the last ``minutes``."""
    end = int((time.time() if now is None else now) // STATS_BUCKET) * STATS_BUCKET
    starts = list(range(end - int(minutes * 60) + STATS_BUCKET, end + 1, STATS_BUCKET))
    with broker_errors():
        async with client.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(keyspace.stats_bucket(start))
            found: list[dict[str, str]] = await pipe.execute()
    per_function: dict[str, list[dict[str, int]]] = defaultdict(lambda: [{} for _ in starts])
    for i, raw in enumerate(found):
        for key, value in raw.items():
            function, _, part = key.rpartition("\t")
            per_function[function][i][part] = int(value)
    out = {}
    for function, buckets in per_function.items():
        hists = [
            Histogram.of(
                {int(p[1:]): n for p, n in b.items() if p.startswith("b")}, 0.0, SECONDS_BUCKETS
            )
            for b in buckets
        ]
        out[function] = Window(
            times=[float(s) for s in starts],
            rate=[b.get("n", 0) / STATS_BUCKET for b in buckets],
            errors=[b.get("failed", 0) / STATS_BUCKET for b in buckets],
            p50=[h.quantile(0.5) for h in hists],
            p95=[h.quantile(0.95) for h in hists],
        )
    return out


async def recent(client: aioredis.Redis, count: int = RECENT) -> list[dict[str, Any]]:
    """The last finished invocations, newest first."""
    with broker_errors():
        raw = await client.lrange(keyspace.RECENT, 0, count - 1)
    return [json.loads(item) for item in raw]
