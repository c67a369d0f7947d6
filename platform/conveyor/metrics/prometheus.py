"""``GET /metrics``: Prometheus text format, platform-wide.

What invocations did is counted in Redis by the job scripts (:mod:`conveyor.metrics.db`)
whatever machine ran them, so every API process answers with the same figures; a scrape
reads a few hashes (O(functions)). Queue depths and live workers are read at the scrape.
HTTP requests are this API process's own (scrape each process, as usual).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from conveyor.metrics.db import Histogram as Counts
from conveyor.metrics.db import Totals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Snapshot:
    """What a scrape read from Redis and the census."""

    totals: Totals
    depths: dict[str, int]  # queue -> waiting invocations
    workers: dict[str, int] | None  # queue -> live worker processes (None: unknown)
    functions: dict[str, int]  # status -> how many functions


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _histogram(name: str, doc: str, hists: dict[str, Counts]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["function"])
    for function, hist in sorted(hists.items()):
        buckets = [("+Inf" if b == float("inf") else repr(b), c) for b, c in hist.buckets]
        family.add_metric([function], buckets, hist.sum)
    return family


def families(snap: Snapshot) -> list[Metric]:
    t = snap.totals
    invocations = CounterMetricFamily(
        "conveyor_invocations",
        "Invocations that finished, by status (a pipeline's runs under its name)",
        labels=["function", "status"],
    )
    for (function, status), n in sorted(t.invocations.items()):
        invocations.add_metric([function, status], n)
    failures = CounterMetricFamily(
        "conveyor_invocation_failures",
        "Failed invocations, by the type of their error",
        labels=["function", "error_type"],
    )
    for (function, error_type), n in sorted(t.failures.items()):
        failures.add_metric([function, error_type], n)
    retries = CounterMetricFamily(
        "conveyor_retries", "Attempts that failed and were retried", labels=["function"]
    )
    for function, n in sorted(t.retries.items()):
        retries.add_metric([function], n)
    redeliveries = CounterMetricFamily(
        "conveyor_redeliveries",
        "Attempts started again because the worker running them died",
        labels=["function"],
    )
    for function, n in sorted(t.redeliveries.items()):
        redeliveries.add_metric([function], n)
    depth = GaugeMetricFamily(
        "conveyor_queue_depth", "Invocations waiting, every priority level", labels=["queue"]
    )
    for queue, n in sorted(snap.depths.items()):
        depth.add_metric([queue], n)
    workers = GaugeMetricFamily(
        "conveyor_workers", "Live worker processes consuming the queue", labels=["queue"]
    )
    for queue, n in sorted((snap.workers or {}).items()):
        workers.add_metric([queue], n)
    functions = GaugeMetricFamily("conveyor_functions", "Deployed functions", labels=["status"])
    for status, n in sorted(snap.functions.items()):
        functions.add_metric([status], n)
    pending = GaugeMetricFamily("conveyor_webhooks_pending", "Webhook deliveries not yet settled")
    pending.add_metric([], t.webhooks_pending)
    rejections = CounterMetricFamily(
        "conveyor_rejections",
        "Submits refused by a limit ([limits] max_queued: 429)",
        labels=["function", "limit"],
    )
    for (function, limit), n in sorted(t.rejections.items()):
        rejections.add_metric([function, limit], n)
    memory = GaugeMetricFamily("conveyor_redis_memory_bytes", "Memory Redis uses (used_memory)")
    memory.add_metric([], t.memory[0])
    ceiling = GaugeMetricFamily("conveyor_redis_maxmemory_bytes", "Redis's maxmemory (0: none set)")
    ceiling.add_metric([], t.memory[1])
    return [
        invocations,
        failures,
        retries,
        redeliveries,
        _histogram(
            "conveyor_invocation_duration_seconds",
            "Run time of the attempt that finished the invocation",
            t.durations,
        ),
        _histogram(
            "conveyor_queue_wait_seconds",
            "From accepted to the first attempt's start",
            t.queue_waits,
        ),
        _histogram("conveyor_batch_size", "Items per predict_batch call", t.batch_sizes),
        depth,
        workers,
        functions,
        pending,
        rejections,
        memory,
        ceiling,
    ]


class HttpMetrics:
    """This process's HTTP requests by route template, method and status."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "conveyor_http_requests",
            "HTTP requests answered by this API process",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "conveyor_http_request_duration_seconds",
            "Time to answer an HTTP request, by this API process",
            ["route", "method"],
            registry=self.registry,
            buckets=HTTP_BUCKETS,
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Litestar middleware (runs after routing: ``path_template`` is known)."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def sending(message: MutableMapping[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                route = scope.get("path_template") or "unmatched"
                method = scope["method"]
                self.requests.labels(route, method, str(status)).inc()
                self.latency.labels(route, method).observe(time.perf_counter() - started)

        return measured

    def exposition(self, snap: Snapshot) -> bytes:
        scraped = CollectorRegistry(auto_describe=False)
        scraped.register(_Families(families(snap)))
        return generate_latest(scraped) + generate_latest(self.registry)
