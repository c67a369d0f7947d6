"""One pub/sub subscription per API process, and what rides on it.

:class:`Subscription` holds one connection subscribed to every channel a handler was
registered for, reconnects by itself, and tells its users when it (re)connects: whatever
was published meanwhile was missed. :class:`Waiters` uses it for invocations finishing:
every transition that ends one publishes ``<id> <record as JSON>`` on
:data:`keys.EVENTS_CHANNEL` (see :mod:`conveyor.queueing.jobs`), handed to the requests
waiting for that id, so a thousand waiting clients cost neither threads nor polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from conveyor.log import get_logger
from conveyor.queueing import keys
from conveyor.queueing.jobs import JobRecord

log = get_logger(__name__)


class Subscription:
    """Channels of one Redis connection, each with its handler."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.connected = False  # subscribed now: nothing published is being missed
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._on_connect: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    def on(
        self, channel: str, handler: Callable[[str], None], on_connect: Callable[[], None]
    ) -> None:
        """Call ``handler(payload)`` per message on ``channel``; ``on_connect()`` each time
        the subscription is made (messages before it may have been missed)."""
        self._handlers[channel] = handler
        self._on_connect.append(on_connect)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="conveyor-subscription")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.redis.aclose()

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                async for channel, payload in self._messages():
                    backoff = 0.1
                    self._handlers[channel](payload)
            except (RedisError, OSError) as exc:
                self.connected = False
                if backoff == 0.1:  # once per outage, not once per reconnection attempt
                    log.warning("events_disconnected", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _messages(self) -> AsyncIterator[tuple[str, str]]:
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(*self._handlers)
            self.connected = True
            for callback in self._on_connect:
                callback()
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    yield str(message["channel"]), str(message["data"])


class Waiters:
    """Per-invocation event queues, fed by the subscription to the events channel."""

    def __init__(self, subscription: Subscription) -> None:
        self._queues: dict[str, set[asyncio.Queue[JobRecord | None]]] = {}
        subscription.on(keys.EVENTS_CHANNEL, self._dispatch, self._wake_all)

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
        """Anything that finished while we were not subscribed: waiters read it again."""
        for waiting in self._queues.values():
            for queue in waiting:
                queue.put_nowait(None)


class Wakeups:
    """Requests waiting for something named by an id to change (a map job): the channel's
    payload is the id; a reconnection wakes everybody (they read again)."""

    def __init__(self, subscription: Subscription, channel: str) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        subscription.on(channel, self._dispatch, self._wake_all)

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._events.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._events.get(key)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._events[key]

    def _dispatch(self, payload: str) -> None:
        for event in self._events.get(payload, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiting in self._events.values():
            for event in waiting:
                event.set()
