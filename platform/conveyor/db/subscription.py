"""One pub/sub subscription per API process, and the requests waiting on it.

:class:`Subscription` holds one connection subscribed to every channel a handler was
registered for, reconnects by itself, and tells its users when it (re)connects: whatever
was published meanwhile was missed. :class:`Waiters` hands each message on a channel to the
requests waiting for the id it names (an invocation finishing, a map job changing), so a
thousand waiting clients cost neither threads nor polling; :func:`long_poll` is the one loop
such a request waits in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Generic, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from conveyor.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")
E = TypeVar("E")


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


class Waiters(Generic[T]):
    """Per-id event queues, fed by one channel of the subscription.

    A message's payload starts with the id it is about; ``parse(payload)`` is what it
    carries for the waiters, made only when someone waits for that id. A reconnection puts
    ``None`` in every queue (something may have been missed: read it again).
    """

    def __init__(
        self,
        subscription: Subscription,
        channel: str,
        parse: Callable[[str], T],
    ) -> None:
        self._queues: dict[str, set[asyncio.Queue[T | None]]] = {}
        self._parse = parse
        subscription.on(channel, self._dispatch, self._wake_all)

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Queue[T | None]]:
        queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._queues.setdefault(key, set()).add(queue)
        try:
            yield queue
        finally:
            waiting = self._queues.get(key)
            if waiting is not None:
                waiting.discard(queue)
                if not waiting:
                    del self._queues[key]

    def _dispatch(self, payload: str) -> None:
        key = payload.partition(" ")[0]
        waiting = self._queues.get(key)
        if waiting:
            value = self._parse(payload)
            for queue in waiting:
                queue.put_nowait(value)

    def _wake_all(self) -> None:
        for waiting in self._queues.values():
            for queue in waiting:
                queue.put_nowait(None)


async def long_poll(
    current: T,
    done: Callable[[T], bool],
    events: asyncio.Queue[E | None],
    timeout: float,
    read: Callable[[E | None], Awaitable[T]],
) -> T:
    """Wait up to ``timeout`` seconds for ``done(current)``: each event (``None`` after a
    reconnection) is turned into the next ``current`` by ``read``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(current):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):  # no extra task, unlike wait_for
                event = await events.get()
        except TimeoutError:
            break
        current = await read(event)
    return current
