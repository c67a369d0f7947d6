"""Who is serving and how much is waiting: live workers (from their heartbeats) and queue
depths, read the same way by the API (async) and by the worker supervisor (sync).

A worker writes ``conveyor:worker:<name>`` (JSON, expiring after three missed beats) and adds
its name to the ``conveyor:workers`` set; :data:`LIVE_WORKERS` reads the live ones and drops
the names whose heartbeat expired, atomically, so no reader ever scans the keyspace.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from conveyor.db import keyspace
from conveyor.db.scripts import Scripts, script
from conveyor.functions.manifest import ENVIRONMENT_QUEUE_INFIX
from conveyor.settings import GPU_QUEUE_SUFFIX

AUTOSCALER = "autoscaler"  # the "kind" of a supervisor's heartbeat; workers have none

LIVE_WORKERS = script("broker", "live_workers")


def live_workers_args() -> dict[str, str]:
    """The keys and arguments of :data:`LIVE_WORKERS`."""
    return {"names": keyspace.WORKERS, "prefix": keyspace.WORKER_PREFIX}


def parse_workers(beats: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(b) for b in beats]


@dataclass(frozen=True)
class QueueCensus:
    """Who serves each queue: live worker processes, and the queues an autoscaler watches
    (it starts a worker process when work arrives, even from none)."""

    workers: Mapping[str, int]
    autoscaled: frozenset[str] = frozenset()
    processes: Mapping[str, int] = field(default_factory=dict)  # their pool processes

    @classmethod
    def of(cls, beats: list[dict[str, Any]]) -> QueueCensus:
        live = [b for b in beats if b.get("kind") != AUTOSCALER]
        workers = Counter(q for b in live for q in b["queues"])
        processes: Counter[str] = Counter()
        for beat in live:
            for queue in beat["queues"]:
                processes[queue] += int(beat.get("concurrency", 1))
        scaled = frozenset(q for b in beats if b.get("kind") == AUTOSCALER for q in b["queues"])
        return cls(dict(workers), scaled, dict(processes))

    def count(self, queue: str) -> int:
        return self.workers.get(queue, 0)

    def pool(self, queue: str) -> int:
        """The pool processes that consume ``queue`` (a chunk each, at most, at once)."""
        return self.processes.get(queue, 0)

    def scaled(self, queue: str) -> bool:
        """Whether an autoscaler watches ``queue`` (an environment's variant: its queue)."""
        return queue in self.autoscaled or base_queue(queue) in self.autoscaled

    def warning(self, queue: str) -> str | None:
        """Why an invocation on ``queue`` would wait for nobody, if it would."""
        if self.count(queue) or self.scaled(queue):
            return None
        return no_worker_warning(queue)


def base_queue(queue: str) -> str:
    """The queue whose workers start the process of an environment's variant of it."""
    return queue.partition(ENVIRONMENT_QUEUE_INFIX)[0]


def worker_hint(queue: str) -> str:
    """The command that would start a worker for ``queue`` (for an environment's variant:
    a worker of its queue, which starts the environment's process)."""
    queue = base_queue(queue)
    if queue.endswith(GPU_QUEUE_SUFFIX):
        return f"conveyor worker --gpus all --queues {queue.removesuffix(GPU_QUEUE_SUFFIX)}"
    return f"conveyor worker --queues {queue}"


def no_worker_warning(queue: str) -> str:
    return (
        f"no live worker consumes queue {queue!r}: the invocation waits until one starts"
        f" ({worker_hint(queue)})"
    )


class Heartbeats:
    """The synchronous reader, for processes without an event loop (the supervisor)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._scripts = Scripts(client)

    def workers(self) -> list[dict[str, Any]]:
        return parse_workers(self._scripts.call(LIVE_WORKERS, **live_workers_args()))

    def beat(self, name: str, payload: dict[str, Any], interval: float) -> None:
        """Announce ``name`` for three ``interval``s."""
        with self.redis.pipeline() as pipe:
            pipe.set(keyspace.worker(name), json.dumps(payload), ex=int(interval * 3) + 1)
            pipe.sadd(keyspace.WORKERS, name)
            pipe.execute()

    def forget(self, name: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.srem(keyspace.WORKERS, name)
            pipe.delete(keyspace.worker(name))
            pipe.execute()

    def depth(self, queues: list[str], batching: Mapping[str, int] | None = None) -> int:
        """Work waiting in ``queues``, in units of one process's turn: messages over all
        priority levels, plus each batching function's stream items (``batching``:
        function -> max_batch_size) as the batches they make."""
        batching = batching or {}
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                for key in keyspace.queue_lists(queue):
                    pipe.llen(key)
            for function in batching:
                pipe.xlen(keyspace.batch_stream(function))
            sizes: list[int] = pipe.execute()
        lists = len(sizes) - len(batching)
        batches = zip(sizes[lists:], batching.values(), strict=True)
        return sum(sizes[:lists]) + sum(math.ceil(items / size) for items, size in batches)
