"""Waiting for invocations to finish: one pub/sub subscription per process.

Every transition that ends an invocation publishes ``<id> <record as JSON>`` on
:data:`keys.EVENTS_CHANNEL` (see :mod:`conveyor.queueing.jobs`); :class:`Waiters` hands
each to the requests waiting for that id, so a thousand waiting clients cost neither
threads nor polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from conveyor.log import get_logger
from conveyor.queueing import keys
from conveyor.queueing.jobs import JobRecord

log = get_logger(__name__)


class Waiters:
    """Per-invocation event queues, fed by one subscription to the events channel."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._queues: dict[str, set[asyncio.Queue[JobRecord | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="conveyor-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.redis.aclose()

    @contextlib.contextmanager
    def watch(self, invocation_id: str) -> Iterator[asyncio.Queue[JobRecord | None]]:
        queue: asyncio.Queue[JobRecord | None] = asyncio.Queue()
        self._queues.setdefault(invocation_id, set()).add(queue)
        try:
            yield queue
        finally:
            waiting = self._queues.get(invocation_id)
            if waiting is not None:
                waiting.discard(queue)
                if not waiting:
                    del self._queues[invocation_id]

    def _dispatch(self, payload: str) -> None:
        invocation_id, _, record = payload.partition(" ")
        waiting = self._queues.get(invocation_id)
        if waiting:
            finished = JobRecord.from_hash(invocation_id, json.loads(record))
            for queue in waiting:
                queue.put_nowait(finished)

    def _wake_all(self) -> None:
        for waiting in self._queues.values():
            for queue in waiting:
                queue.put_nowait(None)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                async for payload in self._messages():
                    backoff = 0.1
                    self._dispatch(payload)
            except (RedisError, OSError) as exc:
                if backoff == 0.1:  # once per outage, not once per reconnection attempt
                    log.warning("events_disconnected", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _messages(self) -> AsyncIterator[str]:
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(keys.EVENTS_CHANNEL)
            self._wake_all()  # anything that finished while we were not subscribed
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    yield str(message["data"])
