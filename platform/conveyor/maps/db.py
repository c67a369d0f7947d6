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
from conveyor.errors import (
    IdempotencyConflictError,
    InvocationFinishedError,
    InvocationNotFoundError,
    VersionNotFoundError,
)
from conveyor.invocations.records import WEBHOOK_LUA, webhook_view
from conveyor.metrics import db as stats

STAGING_TTL = 3600  # seconds an upload that never finished lingers
RECENT_JOBS = 100
FINAL = ("succeeded", "failed", "cancelled")

# Shared Lua: feed(...) moves due retries, then waiting items, into chunk k and queues its
# message, if the job runs and chunk k is the next; finish(...) ends a job with nothing
# left to run.
_LUA = (
    WEBHOOK_LUA
    + stats.LUA
    + """
local function feed(job, inputs, retries, chunk, queue, k, n, message, now)
  if redis.call('HGET', job, 'status') ~= 'running' then return 0 end
  if tonumber(redis.call('HGET', job, 'chunks')) ~= tonumber(k) then return 0 end
  local due = redis.call('ZRANGEBYSCORE', retries, '-inf', now, 'LIMIT', 0, n)
  for _, entry in ipairs(due) do
    redis.call('RPUSH', chunk, entry)
    redis.call('ZREM', retries, entry)
  end
  local want = tonumber(n) - #due
  if want > 0 then
    local items = redis.call('LPOP', inputs, want)
    if items then redis.call('RPUSH', chunk, unpack(items)) end
  end
  if redis.call('EXISTS', chunk) == 0 then return 0 end
  redis.call('HINCRBY', job, 'chunks', 1)
  redis.call('HINCRBY', job, 'outstanding', 1)
  redis.call('LPUSH', queue, message)
  return 1
end

local function finish(job, id, now, delivery, due, wake, related, in_use)
  local version = redis.call('HGET', job, 'function') .. '@' .. redis.call('HGET', job, 'version')
  if redis.call('HINCRBY', in_use, version, -1) <= 0 then redis.call('HDEL', in_use, version) end
  local status = redis.call('HGET', job, 'status')
  if status == 'running' then
    if tonumber(redis.call('HGET', job, 'failed') or '0') > 0 then status = 'failed'
    else status = 'succeeded' end
  end
  redis.call('HSET', job, 'status', status, 'finished_at', now)
  local ttl = redis.call('HGET', job, 'ttl') or '3600'
  redis.call('EXPIRE', job, ttl)
  for _, key in ipairs(related) do redis.call('EXPIRE', key, ttl) end
  local idempotency = redis.call('HGET', job, 'idempotency_key')
  if idempotency then redis.call('EXPIRE', idempotency, ttl) end
  if delivery ~= '' then
    local flat = redis.call('HGETALL', job)
    local record = {}
    for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
    webhook('completed', record, id, job, delivery, due, wake)
  end
end

local function ended(job, inputs, retries)
  return tonumber(redis.call('HGET', job, 'outstanding')) == 0
    and redis.call('LLEN', inputs) == 0 and redis.call('ZCARD', retries) == 0
end
"""
)

# An upload is complete: the job runs, its first chunks are queued, in one step (a 202
# is a promise); its version counts as in use until the job ends. KEYS: job, inputs,
# retries, results, done, jobs-by-function, idempotency or '', channel, queue list,
# delivery, due, wake, the version's record, versions in use, then one chunk key per
# initial chunk. ARGV: id, now, pending ttl, digest, number of chunks, then (k, n, message)
# per chunk. Returns {1, ''} accepted; {2, "<id> <digest>"} the key's first job; {0,
# status}; {3, ''} the function store no longer holds the version.
FINISH_UPLOAD = (
    _LUA
    + """
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if status ~= 'uploading' then return {0, status or ''} end
if KEYS[7] ~= '' then
  local first = redis.call('GET', KEYS[7])
  if first then return {2, first} end
end
if redis.call('EXISTS', KEYS[13]) == 0 then return {3, ''} end
if KEYS[7] ~= '' then
  redis.call('SET', KEYS[7], ARGV[1] .. ' ' .. ARGV[4], 'EX', ARGV[3])
  redis.call('HSET', job, 'idempotency_key', KEYS[7])
end
redis.call('HINCRBY', KEYS[14],
           redis.call('HGET', job, 'function') .. '@' .. redis.call('HGET', job, 'version'), 1)
redis.call('HSET', job, 'status', 'running', 'started_at', ARGV[2])
for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
redis.call('ZADD', KEYS[6], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -1 - RECENT_JOBS)
local chunks = tonumber(ARGV[5])
for c = 1, chunks do
  local base = 5 + (c - 1) * 3
  feed(job, KEYS[2], KEYS[3], KEYS[14 + c], KEYS[9], ARGV[base + 1], ARGV[base + 2],
       ARGV[base + 3], ARGV[2])
end
if ended(job, KEYS[2], KEYS[3]) then
  finish(job, ARGV[1], ARGV[2], KEYS[10], KEYS[11], KEYS[12], {KEYS[4], KEYS[5]}, KEYS[14])
end
redis.call('PUBLISH', KEYS[8], ARGV[1])
return {1, ''}
"""
).replace("RECENT_JOBS", str(RECENT_JOBS))

# A chunk starts: only while its job runs. KEYS: job, active. ARGV: task id, chunk.
# Returns {1 or 0, starts of this chunk so far, the job's queue, its priority}.
BEGIN = """
local found = redis.call('HMGET', KEYS[1], 'status', 'queue', 'priority')
if found[1] ~= 'running' then return {0, 0, '', ''} end
redis.call('SADD', KEYS[2], ARGV[1])
return {1, redis.call('HINCRBY', KEYS[1], 'starts:' .. ARGV[2], 1), found[2], found[3]}
"""

# A chunk's outcome, and the next chunk (if the job still runs). KEYS: job, chunk, results,
# done, retries, active, inputs, next chunk, queue, channel, counters (invocations,
# failures, durations), delivery, due, wake, versions in use. ARGV: id, now, task id,
# chunk, seconds per item seen (or ''), next k, next n, next message ('' for none),
# function, number of results, then (index, status, error type, seconds, result) per item,
# number of retries, then (entry, due) per retry, number of items given back (the chunk
# yielded to more urgent work), then their entries: they go back to the front of the
# waiting items, or, if the job was cancelled meanwhile, count as cancelled; last, a timer
# message (KEYS[18] its list) due with the earliest of this chunk's retries, pushed unless a
# chunk was fed: the retries are never left without something to feed them.
# Returns {fed, ended, earliest retry or ''}.
SETTLE = (
    _LUA
    + """
local job, id, now = KEYS[1], ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, 0, ''} end  -- settled already
local fn = ARGV[9]
local n = tonumber(ARGV[10])
local at = 11
for i = 1, n do
  local index, status, error_type, seconds, result = ARGV[at], ARGV[at + 1], ARGV[at + 2],
    ARGV[at + 3], ARGV[at + 4]
  at = at + 5
  if redis.call('HSETNX', KEYS[3], index, result) == 1 then
    redis.call('HINCRBY', job, status, 1)
    redis.call('RPUSH', KEYS[4], index)
    if KEYS[11] ~= '' and status ~= 'cancelled' then
      redis.call('HINCRBY', KEYS[11], fn .. '\\t' .. status, 1)
      if status == 'failed' then redis.call('HINCRBY', KEYS[12], fn .. '\\t' .. error_type, 1) end
      if seconds ~= '' then observe(KEYS[13], fn, tonumber(seconds), SECONDS) end
    end
  end
end
local retries = tonumber(ARGV[at])
for i = 1, retries do
  redis.call('ZADD', KEYS[5], ARGV[at + 2 * i], ARGV[at + 2 * i - 1])
end
at = at + 2 * retries + 1
local back = tonumber(ARGV[at])
if back > 0 then
  if redis.call('HGET', job, 'status') == 'running' then
    local entries = {}
    for i = back, 1, -1 do entries[#entries + 1] = ARGV[at + i] end
    redis.call('LPUSH', KEYS[7], unpack(entries))  -- the first given back ends up first
  else
    redis.call('HINCRBY', job, 'cancelled', back)
    redis.call('HINCRBY', job, 'never_fed', back)
  end
end
if ARGV[5] ~= '' then
  local seen = tonumber(ARGV[5])
  local before = tonumber(redis.call('HGET', job, 'item_seconds') or seen)
  redis.call('HSET', job, 'item_seconds', tostring(0.7 * before + 0.3 * seen))
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[6], ARGV[3])
redis.call('HINCRBY', job, 'outstanding', -1)
redis.call('HDEL', job, 'starts:' .. ARGV[4])
local fed = 0
if ARGV[8] ~= '' then
  fed = feed(job, KEYS[7], KEYS[5], KEYS[8], KEYS[9], ARGV[6], ARGV[7], ARGV[8], now)
end
local timer = ARGV[at + back + 1]
if retries > 0 and fed == 0 and timer and timer ~= '' then redis.call('LPUSH', KEYS[18], timer) end
local over = 0
if ended(job, KEYS[7], KEYS[5]) and not redis.call('HGET', job, 'finished_at') then
  finish(job, id, now, KEYS[14], KEYS[15], KEYS[16], {KEYS[3], KEYS[4]}, KEYS[17])
  over = 1
end
redis.call('PUBLISH', KEYS[10], id)
local earliest = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
return {fed, over, earliest[2] or ''}
"""
)

# Feed one more chunk (a window that grew, a retry that came due). KEYS: job, inputs,
# retries, chunk, queue. ARGV: k, n, message, now.
FEED = (
    _LUA
    + """
return feed(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

# Cancel: nothing is fed after this. KEYS: job, inputs, retries, channel, results, done,
# delivery, due, wake, active, versions in use. ARGV: id, now. Returns {1, chunks still
# running} or {0, status}.
CANCEL = (
    _LUA
    + """
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if status ~= 'running' then return {0, status or ''} end
local never = redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3])
redis.call('HSET', job, 'status', 'cancelled', 'cancelled_at', ARGV[2])
redis.call('HINCRBY', job, 'cancelled', never)
redis.call('HINCRBY', job, 'never_fed', never)
redis.call('DEL', KEYS[2], KEYS[3])
if tonumber(redis.call('HGET', job, 'outstanding')) == 0 then
  finish(job, ARGV[1], ARGV[2], KEYS[7], KEYS[8], KEYS[9], {KEYS[5], KEYS[6]}, KEYS[11])
end
redis.call('PUBLISH', KEYS[4], ARGV[1])
return {1, redis.call('SCARD', KEYS[10])}
"""
)


@dataclass(frozen=True)
class MapJob:
    """What the API answers about a job."""

    id: str
    function: str
    version: str
    status: str  # uploading, running, succeeded, failed, cancelled
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

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

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
        )


def chunk_size(batch: int, item_seconds: float | None, target: float, most: int) -> int:
    """Items in the next chunk: about ``target`` seconds of work, whole batches for a
    batching function (``batch`` > 0). Until a chunk has been timed, one item (or batch):
    slow items then run side by side from the start."""
    size = 1 if item_seconds is None else int(target / max(item_seconds, 1e-6))
    if batch:
        size = max(batch, size // batch * batch)
    return max(1, min(size, most))


def settle_keys(
    job_id: str, chunk: int, next_chunk: int, queue_key: str, *, metrics: bool, timer_key: str = ""
) -> list[str]:
    counted = [keyspace.METRICS_INVOCATIONS, keyspace.METRICS_FAILURES, keyspace.METRICS_DURATION]
    return [
        keyspace.map_job(job_id),
        keyspace.map_chunk(job_id, chunk),
        keyspace.map_results(job_id),
        keyspace.map_done(job_id),
        keyspace.map_retries(job_id),
        keyspace.map_active(job_id),
        keyspace.map_inputs(job_id),
        keyspace.map_chunk(job_id, next_chunk),
        queue_key,
        keyspace.MAP_EVENTS_CHANNEL,
        *(counted if metrics else ["", "", ""]),
        keyspace.webhook_delivery(job_id, "completed"),
        keyspace.WEBHOOKS_DUE,
        keyspace.WEBHOOKS_WAKE,
        keyspace.VERSIONS_IN_USE,
        timer_key,
    ]


def feed_keys(job_id: str, chunk: int, queue_key: str) -> list[str]:
    return [
        keyspace.map_job(job_id),
        keyspace.map_inputs(job_id),
        keyspace.map_retries(job_id),
        keyspace.map_chunk(job_id, chunk),
        queue_key,
    ]


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
    (an item never fed of a cancelled job is cancelled)."""
    if compact is None:
        if job_status == "cancelled":
            return {"index": index, "status": "cancelled", "attempts": 0}
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


class MapStore:
    """The API's side: stage an upload, finish it, read jobs and results, cancel."""

    def __init__(self, redis: aioredis.Redis, app: BrokerApp) -> None:
        self.redis = redis
        self.app = app
        self._finish = redis.register_script(FINISH_UPLOAD)
        self._cancel = redis.register_script(CANCEL)

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
            await self.redis.delete(
                keyspace.map_job(job_id),
                keyspace.map_inputs(job_id),
                keyspace.map_results(job_id),
                keyspace.map_done(job_id),
            )

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
        keys_ = [
            keyspace.map_job(job_id),
            keyspace.map_inputs(job_id),
            keyspace.map_retries(job_id),
            keyspace.map_results(job_id),
            keyspace.map_done(job_id),
            keyspace.map_jobs(fields["function"]),
            idempotency,
            keyspace.MAP_EVENTS_CHANNEL,
            queue_key,
            keyspace.webhook_delivery(job_id, "completed") if fields.get("webhook") else "",
            keyspace.WEBHOOKS_DUE,
            keyspace.WEBHOOKS_WAKE,
            keyspace.function_version(fields["function"], fields["version"]),
            keyspace.VERSIONS_IN_USE,
            *(keyspace.map_chunk(job_id, k) for k in range(chunks)),
        ]
        args: list[Any] = [job_id, repr(time.time()), pending_ttl, digest, chunks]
        for k, (_, message) in enumerate(messages):
            args += [k, size, message]
        with broker_errors():
            await self.redis.hset(keyspace.map_job(job_id), "total", total)
            outcome, detail = await self._finish(keys=keys_, args=args)
        if outcome == 2:
            first, _, first_digest = str(detail).partition(" ")
            await self.redis.delete(*keys_[:5])
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

    async def cancel(self, job_id: str) -> int:
        """Stop feeding; the chunks still running (their task ids) are returned by
        :meth:`running`. Returns how many were running, or raises if not running."""
        keys_ = [
            keyspace.map_job(job_id),
            keyspace.map_inputs(job_id),
            keyspace.map_retries(job_id),
            keyspace.MAP_EVENTS_CHANNEL,
            keyspace.map_results(job_id),
            keyspace.map_done(job_id),
            keyspace.webhook_delivery(job_id, "completed"),
            keyspace.WEBHOOKS_DUE,
            keyspace.WEBHOOKS_WAKE,
            keyspace.map_active(job_id),
            keyspace.VERSIONS_IN_USE,
        ]
        with broker_errors():
            changed, detail = await self._cancel(keys=keys_, args=[job_id, repr(time.time())])
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
