"""Map jobs in Redis: one function over many inputs.

A job is a hash (:func:`keyspace.map_job`) and, while it runs:

- its items waiting to be fed, a list of ``[index,attempt,input]`` JSON entries (an item
  costs its input's JSON plus ~20 bytes here until it is fed);
- chunks: a chunk's items move from that list to ``map_chunk(job, k)`` in the same Lua
  call that queues the chunk's Celery message (``conveyor.map``), so an item is always in
  exactly one place. At most ``[map] window`` chunks per worker process of the queue are
  queued or running at once; a chunk aims at ``[map] chunk_seconds`` of work (its size
  follows the job's measured time per item), and its message sits one priority step below
  the job's, so single invocations of the same priority go first;
- results by index (``{"s", "a", "d", "o"|"e"}``), the indices in the order they finished,
  retries waiting for their backoff, and the chunks running now (for cancel).

Feeding is clocked by completions: the script that stores a chunk's results also queues
the next chunk (whose message the worker built beforehand, for the chunk number it read;
if another feeder got there first, the script leaves the feeding to it). Nothing is fed
after a cancel. When the last item is settled, the job ends and everything it holds
expires after the function's result ``ttl``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from conveyor.broker.app import BrokerApp
from conveyor.broker.messages import chunk_message
from conveyor.db import keyspace
from conveyor.db.connections import broker_errors
from conveyor.db.scripts import Scripts, script
from conveyor.errors import (
    IdempotencyConflictError,
    InvocationFinishedError,
    InvocationNotFoundError,
    VersionNotFoundError,
)
from conveyor.invocations.records import counted_keys, webhook_view

STAGING_TTL = 3600  # seconds an upload that never finished lingers
RECENT_JOBS = 100
FINAL = ("succeeded", "failed", "cancelled", "expired")

FINISH_UPLOAD = script("maps", "finish_upload")
BEGIN = script("maps", "begin")
SETTLE = script("maps", "settle")
FEED = script("maps", "feed")
CANCEL = script("maps", "cancel")
START_RUNS = script("maps", "start_runs")
RUNS_WINDOW = 256  # a map job over a pipeline: runs under way at once


@dataclass(frozen=True)
class MapJob:
    """What the API answers about a job."""

    id: str
    function: str
    version: str
    status: str  # uploading, running, succeeded, failed, cancelled, expired
    total: int
    succeeded: int
    failed: int
    cancelled: int
    priority: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    owner: str | None
    webhook: dict[str, Any] | None
    kind: str = "map"  # "pipeline": each item a run of a pipeline
    expired: int = 0  # items its deadline ended before they ran

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.expired

    @property
    def final(self) -> bool:
        return self.status in FINAL and self.finished_at is not None

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[str, str]) -> MapJob:
        def number(field: str) -> float | None:
            return float(raw[field]) if raw.get(field) else None

        return cls(
            id=job_id,
            function=raw["function"],
            version=raw["version"],
            status=raw["status"],
            total=int(raw.get("total", 0)),
            succeeded=int(raw.get("succeeded", 0)),
            failed=int(raw.get("failed", 0)),
            cancelled=int(raw.get("cancelled", 0)),
            priority=int(raw["priority"]),
            created_at=float(raw["created_at"]),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            owner=raw.get("owner"),
            webhook=webhook_view(raw),
            kind=raw.get("kind", "map"),
            expired=int(raw.get("expired", 0)),
        )


def chunk_size(batch: int, item_seconds: float | None, target: float, most: int) -> int:
    """Items in the next chunk: about ``target`` seconds of work, whole batches for a
    batching function (``batch`` > 0). Until a chunk has been timed, one item (or batch):
    slow items then run side by side from the start."""
    size = 1 if item_seconds is None else int(target / max(item_seconds, 1e-6))
    if batch:
        size = max(batch, size // batch * batch)
    return max(1, min(size, most))


def settle_values(
    job_id: str, chunk: int, next_chunk: int, queue_key: str, *, metrics: bool, timer_key: str = ""
) -> dict[str, str]:
    """The keys of :data:`SETTLE`, by name."""
    counted = (keyspace.METRICS_INVOCATIONS, keyspace.METRICS_FAILURES, keyspace.METRICS_DURATION)
    invocations, failures, durations = counted if metrics else ("", "", "")
    return {
        **_job_keys(job_id),
        "chunk": keyspace.map_chunk(job_id, chunk),
        "active": keyspace.map_active(job_id),
        "next_chunk": keyspace.map_chunk(job_id, next_chunk),
        "queue": queue_key,
        "events": keyspace.MAP_EVENTS_CHANNEL,
        "invocations": invocations,
        "failures": failures,
        "durations": durations,
        "delivery": keyspace.webhook_delivery(job_id, "completed"),
        "due": keyspace.WEBHOOKS_DUE,
        "wake": keyspace.WEBHOOKS_WAKE,
        "in_use": keyspace.VERSIONS_IN_USE,
        "timer_list": timer_key,
        # a pipeline's for_each step: what its run's scripts write as a transition would
        "records": keyspace.EVENTS_CHANNEL,
        "stream_events": keyspace.STREAM_EVENTS_CHANNEL,
        "sent": keyspace.SENT,
        "sent_messages": keyspace.SENT_MESSAGES,
        "sent_sequence": keyspace.sent_sequence(queue_key),
        **{
            "retries_count" if name == "retries" else name: key
            for name, key in counted_keys(metrics).items()
            if name in ("retries", "bucket", "recent")
        },
    }


def feed_values(job_id: str, chunk: int, queue_key: str) -> dict[str, str]:
    """The keys of :data:`FEED`, by name."""
    return {
        "job": keyspace.map_job(job_id),
        "inputs": keyspace.map_inputs(job_id),
        "retries": keyspace.map_retries(job_id),
        "chunk": keyspace.map_chunk(job_id, chunk),
        "queue": queue_key,
        "sent": keyspace.SENT,
        "sent_messages": keyspace.SENT_MESSAGES,
        "sent_sequence": keyspace.sent_sequence(queue_key),
    }


def window(workers: int, per_worker: int) -> int:
    """Chunks of one job queued or running at once."""
    return max(1, workers) * per_worker


def entry(index: int, attempt: int, raw_input: str) -> str:
    """A waiting item: ``[index,attempt,input]`` (the input's JSON as it came)."""
    return f"[{index},{attempt},{raw_input}]"


@dataclass(frozen=True)
class Item:
    index: int
    attempt: int
    input: Any

    @classmethod
    def parse(cls, text: str) -> Item:
        index, attempt, value = json.loads(text)
        return cls(int(index), int(attempt), value)


def result_line(index: int, compact: str | None, job_status: str) -> dict[str, Any] | None:
    """One line of the results stream, from the stored compact form; None: not done yet
    (an item never fed of a cancelled job is cancelled, of an expired one expired)."""
    if compact is None:
        if job_status in ("cancelled", "expired"):
            return {"index": index, "status": job_status, "attempts": 0}
        return None
    stored = json.loads(compact)
    line: dict[str, Any] = {"index": index, "status": stored["s"], "attempts": stored.get("a", 0)}
    if "o" in stored:
        line["output"] = stored["o"]
    if "e" in stored:
        line["error"] = stored["e"]
    if stored.get("d") is not None:
        line["duration_ms"] = stored["d"]
    return line


def _job_keys(job_id: str) -> dict[str, str]:
    """A job's own keys, by the names its scripts give them: what an upload writes before
    it is finished, and what every script of the job reads."""
    return {
        "job": keyspace.map_job(job_id),
        "inputs": keyspace.map_inputs(job_id),
        "retries": keyspace.map_retries(job_id),
        "results": keyspace.map_results(job_id),
        "done": keyspace.map_done(job_id),
    }


def _accept_keys(job_id: str, fields: dict[str, str], idempotency: str) -> dict[str, str]:
    """The keys by which an upload's job starts to run (maps/lua/accept)."""
    return {
        **_job_keys(job_id),
        "jobs": keyspace.map_jobs(fields["function"]),
        "idempotency": idempotency,
        "events": keyspace.MAP_EVENTS_CHANNEL,
        "delivery": (
            keyspace.webhook_delivery(job_id, "completed") if fields.get("webhook") else ""
        ),
        "due": keyspace.WEBHOOKS_DUE,
        "wake": keyspace.WEBHOOKS_WAKE,
        "version_record": keyspace.function_version(fields["function"], fields["version"]),
        "in_use": keyspace.VERSIONS_IN_USE,
    }


class MapStore:
    """The API's side: stage an upload, finish it, read jobs and results, cancel."""

    def __init__(self, redis: aioredis.Redis, app: BrokerApp) -> None:
        self.redis = redis
        self.app = app
        self.scripts = Scripts(redis)

    async def stage(self, job_id: str, fields: dict[str, str]) -> None:
        with broker_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                staged = {**fields, "status": "uploading"}
                pipe.hset(keyspace.map_job(job_id), mapping=staged)  # type: ignore[arg-type]
                pipe.expire(keyspace.map_job(job_id), STAGING_TTL)
                await pipe.execute()

    async def append(self, job_id: str, entries: list[str], invalid: list[tuple[int, str]]) -> None:
        """Store a block of uploaded items: valid ones wait to be fed; invalid ones are
        failed already (their result is the validation error)."""
        with broker_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                if entries:
                    pipe.rpush(keyspace.map_inputs(job_id), *entries)
                    pipe.expire(keyspace.map_inputs(job_id), STAGING_TTL)
                if invalid:
                    pipe.hset(keyspace.map_results(job_id), mapping=dict(invalid))
                    pipe.rpush(keyspace.map_done(job_id), *(i for i, _ in invalid))
                    pipe.hincrby(keyspace.map_job(job_id), "failed", len(invalid))
                    pipe.expire(keyspace.map_results(job_id), STAGING_TTL)
                    pipe.expire(keyspace.map_done(job_id), STAGING_TTL)
                await pipe.execute()

    async def update(self, job_id: str, mapping: dict[str, str]) -> None:
        with broker_errors():
            await self.redis.hset(keyspace.map_job(job_id), mapping=mapping)  # type: ignore[arg-type]

    async def discard(self, job_id: str) -> None:
        """Forget an upload that did not finish (it was never accepted)."""
        with broker_errors():
            await self.redis.delete(*_job_keys(job_id).values())

    async def finish_upload(
        self,
        job_id: str,
        fields: dict[str, str],
        *,
        total: int,
        chunks: int,
        target: float,
        most: int,
        idempotency: str,
        digest: str,
        pending_ttl: int,
    ) -> str:
        """Make the job run (its first ``chunks`` chunks queued); the id of the job that
        runs (another, for an Idempotency-Key used before with the same body)."""
        size = chunk_size(int(fields["batch"]), None, target, most)
        messages = [chunk_message(self.app, job_id, fields, k, size) for k in range(chunks)]
        queue_key = messages[0][0]
        feeds: list[Any] = []
        for k, (_, message, task_id) in enumerate(messages):
            feeds += [k, size, message, task_id]
        with broker_errors():
            await self.redis.hset(keyspace.map_job(job_id), "total", total)
            outcome, detail = await self.scripts.call(
                FINISH_UPLOAD,
                **_accept_keys(job_id, fields, idempotency),
                queue=queue_key,
                sent=keyspace.SENT,
                sent_messages=keyspace.SENT_MESSAGES,
                sent_sequence=keyspace.sent_sequence(queue_key),
                chunks=[keyspace.map_chunk(job_id, k) for k in range(chunks)],
                id=job_id,
                now=repr(time.time()),
                pending_ttl=pending_ttl,
                digest=digest,
                recent_jobs=RECENT_JOBS,
                feeds=feeds,
            )
        return await self._started(job_id, fields, outcome, detail, digest)

    async def start_runs(
        self,
        job_id: str,
        fields: dict[str, str],
        *,
        total: int,
        plan: str,
        idempotency: str,
        digest: str,
        pending_ttl: int,
        metrics: bool,
    ) -> str:
        """Make a job over a pipeline run: its first items start as runs (see
        ``maps/lua/runs.lua``); the id of the job that runs, as :meth:`finish_upload`."""
        counted = counted_keys(metrics)
        with broker_errors():
            await self.redis.hset(keyspace.map_job(job_id), "total", total)
            outcome, detail = await self.scripts.call(
                START_RUNS,
                **_accept_keys(job_id, fields, idempotency),
                active=keyspace.map_active(job_id),
                sent=keyspace.SENT,
                sent_messages=keyspace.SENT_MESSAGES,
                **{k if k != "retries" else "retries_count": v for k, v in counted.items()},
                stream_events=keyspace.STREAM_EVENTS_CHANNEL,
                records=keyspace.EVENTS_CHANNEL,
                id=job_id,
                now=repr(time.time()),
                pending_ttl=pending_ttl,
                digest=digest,
                recent_jobs=RECENT_JOBS,
                plan=plan,
                window=RUNS_WINDOW,
            )
        return await self._started(job_id, fields, outcome, detail, digest)

    async def _started(
        self, job_id: str, fields: dict[str, str], outcome: int, detail: Any, digest: str
    ) -> str:
        """The id of the job that runs, from a starting script's answer; or why none."""
        if outcome == 2:
            first, _, first_digest = str(detail).partition(" ")
            await self.redis.delete(*_job_keys(job_id).values())
            if first_digest != digest:
                raise IdempotencyConflictError(
                    f"Idempotency-Key was used for job {first} with another body; use a new key"
                )
            return first
        if outcome == 3:
            await self.discard(job_id)
            raise VersionNotFoundError(
                f"version {fields['version']} of {fields['function']!r} left the function store"
                " during the upload; send the job again"
            )
        if outcome != 1:
            raise InvocationNotFoundError(f"job {job_id!r} is no longer being uploaded ({detail})")
        return job_id

    async def get(self, job_id: str, function: str) -> MapJob:
        with broker_errors():
            raw = await self.redis.hgetall(keyspace.map_job(job_id))
        if not raw or raw.get("function") != function or raw.get("status") == "uploading":
            raise InvocationNotFoundError(
                f"no job {job_id!r} of function {function!r} (never submitted, or expired)"
            )
        return MapJob.from_hash(job_id, cast(dict[str, str], raw))

    async def results(self, job_id: str, start: int, count: int) -> list[str | None]:
        with broker_errors():
            found = await self.redis.hmget(
                keyspace.map_results(job_id), [str(i) for i in range(start, start + count)]
            )
        return cast(list[str | None], found)

    async def pick(self, job_id: str, indices: list[int]) -> list[str | None]:
        with broker_errors():
            found = await self.redis.hmget(keyspace.map_results(job_id), [str(i) for i in indices])
        return cast(list[str | None], found)

    async def finished_order(self, job_id: str, start: int, count: int) -> list[int]:
        with broker_errors():
            found = await self.redis.lrange(keyspace.map_done(job_id), start, start + count - 1)
        return [int(i) for i in found]

    async def recent(self, function: str, count: int = 20) -> list[MapJob]:
        with broker_errors():
            ids = [
                str(i)
                for i in await self.redis.zrevrange(keyspace.map_jobs(function), 0, count - 1)
            ]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(keyspace.map_job(job_id))
                found = await pipe.execute()
        return [MapJob.from_hash(i, raw) for i, raw in zip(ids, found, strict=True) if raw]

    async def cancel(self, job_id: str, as_: str = "cancelled") -> int:
        """Stop feeding; the chunks still running (their task ids) are returned by
        :meth:`running`. Returns how many were running, or raises if not running.
        ``as_``: 'expired' when its deadline ended it."""
        with broker_errors():
            changed, detail = await self.scripts.call(
                CANCEL,
                **_job_keys(job_id),
                events=keyspace.MAP_EVENTS_CHANNEL,
                delivery=keyspace.webhook_delivery(job_id, "completed"),
                due=keyspace.WEBHOOKS_DUE,
                wake=keyspace.WEBHOOKS_WAKE,
                active=keyspace.map_active(job_id),
                in_use=keyspace.VERSIONS_IN_USE,
                id=job_id,
                now=repr(time.time()),
                **{"as": as_},
            )
        if not changed:
            raise InvocationFinishedError(f"job {job_id!r} already {detail}; nothing to cancel")
        return int(detail)

    async def running(self, job_id: str) -> list[str]:
        with broker_errors():
            return [str(t) for t in await self.redis.smembers(keyspace.map_active(job_id))]


def eta(job: MapJob, now: float) -> float | None:
    """Seconds until the job ends at its rate so far (None: not known yet)."""
    if job.started_at is None or job.done == 0 or job.final:
        return None
    rate = job.done / max(now - job.started_at, 1e-6)
    return math.ceil((job.total - job.done) / rate) if rate else None
