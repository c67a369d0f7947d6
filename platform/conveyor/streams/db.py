"""The streams' Redis half: a running attempt adds events (:class:`StreamWriter`, in a
pool child); the API reads them and follows new ones (:class:`StreamReader`).

An invocation's events are one Redis stream (``conveyor:stream:<id>``) whose entry ids are
the events' numbers, ``<n>-0``, counted by the record (``stream_seq``) in the script that
adds them, so no event exists that the record does not count and a reader resumes after
any number with one ``XRANGE``. Each event is also published, with its data, on one
channel: an API process follows every stream it serves on the subscription it already
has, reading Redis again only after a gap or a reconnection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import redis.asyncio as aioredis

from conveyor.db import keyspace
from conveyor.db.connections import broker_errors
from conveyor.db.scripts import Scripts, script
from conveyor.db.subscription import Subscription, Waiters
from conveyor.errors import StreamTooLargeError
from conveyor.runtime.streaming import StreamStopped
from conveyor.streams.events import Event, EventKind

EMIT = script("streams", "emit")
READ_COUNT = 512  # entries per XRANGE
QUEUE_LIMIT = 1024  # events a slow reader may have waiting before it reads Redis instead
OUTPUT_WEBHOOK_EVERY = 0.5  # seconds between two 'output' webhook deliveries


class StreamWriter:
    """A running attempt's events: added only while the record says it runs."""

    def __init__(self, scripts: Scripts, invocation_id: str, attempt: int, limit: int) -> None:
        self.scripts = scripts
        self.invocation_id = invocation_id
        self.attempt = attempt
        self.limit = limit

    def add(self, events: Sequence[tuple[str, str]]) -> None:
        """Add ``events`` (kind, data) in one step. :class:`StreamStopped` when the attempt
        no longer runs (cancelled); :class:`StreamTooLargeError` past the limit."""
        status, detail = self.scripts.call(
            EMIT,
            record=keyspace.record(self.invocation_id),
            stream=keyspace.stream(self.invocation_id),
            channel=keyspace.STREAM_EVENTS_CHANNEL,
            delivery=keyspace.webhook_delivery(self.invocation_id, "output"),
            due=keyspace.WEBHOOKS_DUE,
            wake=keyspace.WEBHOOKS_WAKE,
            id=self.invocation_id,
            attempt=str(self.attempt),
            limit=str(self.limit),
            webhook_every=str(OUTPUT_WEBHOOK_EVERY),
            events=[part for event in events for part in event],
        )
        if status == "stopped":
            raise StreamStopped(f"the invocation is {detail or 'gone'}")
        if status == "full":
            raise StreamTooLargeError(
                f"the stream's events would take {int(detail)} bytes, past the function's"
                f" [limits] max_stream_bytes of {self.limit}; yield less, or raise the limit"
            )


class StreamReader:
    """The API's side: an invocation's events from a number on, and the new ones as they
    come (one per process, on the process's subscription)."""

    def __init__(self, redis: aioredis.Redis, subscription: Subscription) -> None:
        self.redis = redis
        self._waiters = Waiters(subscription, keyspace.STREAM_EVENTS_CHANNEL, Event.published)

    async def follow(
        self, invocation_id: str, after: int, heartbeat: float
    ) -> AsyncIterator[Event | None]:
        """Every event numbered above ``after``, in order, each once, until 'done'; ``None``
        after ``heartbeat`` seconds without one (the caller keeps the connection alive and
        may look whether the invocation is still there)."""
        last = after
        with self._waiters.watch(invocation_id) as queue:
            while True:
                for event in await read_after(self.redis, invocation_id, last):
                    yield event
                    last = event.seq
                    if event.kind == EventKind.DONE:
                        return
                async for new in _published_after(queue, last, heartbeat):
                    yield new
                    if new is not None:
                        last = new.seq
                        if new.kind == EventKind.DONE:
                            return


async def read_after(redis: aioredis.Redis, invocation_id: str, seq: int) -> list[Event]:
    """Up to :data:`READ_COUNT` events of the invocation numbered above ``seq``, in order
    (:class:`BrokerUnavailableError` when Redis cannot be reached)."""
    with broker_errors():
        entries = await redis.xrange(
            keyspace.stream(invocation_id), min=f"{seq + 1}-0", max="+", count=READ_COUNT
        )
    return [Event.entry(str(i), cast(dict[str, str], f)) for i, f in entries or ()]


async def outputs(redis: aioredis.Redis, invocation_id: str, attempt: int) -> list[Any]:
    """The chunks ``attempt`` has streamed so far (an 'output' webhook's body)."""
    chunks: list[Any] = []
    last = 0
    while batch := await read_after(redis, invocation_id, last):
        for event in batch:
            if event.kind == EventKind.OUTPUT:
                value = event.value()
                if value.get("attempt") == attempt:
                    chunks.append(value.get("output"))
        last = batch[-1].seq
    return chunks


async def _published_after(
    queue: asyncio.Queue[Event | None], last: int, heartbeat: float
) -> AsyncIterator[Event | None]:
    """The published events that follow ``last`` one by one; ends (to read Redis) after a
    gap, a reconnection, a quiet ``heartbeat`` (after yielding None) or a backlog."""
    while True:
        if queue.qsize() > QUEUE_LIMIT:
            while not queue.empty():
                queue.get_nowait()
            return
        try:
            async with asyncio.timeout(heartbeat):
                event = await queue.get()
        except TimeoutError:
            yield None
            return
        if event is None or event.seq > last + 1:
            return
        if event.seq == last + 1:
            last = event.seq
            yield event
