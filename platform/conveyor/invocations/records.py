"""Job records: one Redis hash per invocation, changed only by atomic Lua transitions.

Celery reports PENDING for ids it never saw, so Conveyor keeps its own record: it makes
unknown ids a 404, carries timings and attempts, holds the output, and expires ``ttl``
seconds after the invocation finishes. Every transition that ends an invocation publishes
``<id> <record as JSON>`` on :data:`keyspace.EVENTS_CHANNEL` in the same script, so a
waiter never misses it and needs no further read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from conveyor.db import keyspace
from conveyor.metrics import db as stats


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)

# What ends a record's hold on others, shared by the scripts that end or remove one: its
# Idempotency-Key goes if it still names this invocation (a newer use keeps it), and its
# version is counted down in use (the field goes at zero).
RECORD_LUA = """
local function forget_idempotency(key, id)
  if not key then return end
  local first = redis.call('GET', key)
  if first and string.sub(first, 1, #id + 1) == id .. ' ' then redis.call('DEL', key) end
end
local function count_down(in_use, fn, version)
  local field = fn .. '@' .. version
  if redis.call('HINCRBY', in_use, field, -1) <= 0 then redis.call('HDEL', in_use, field) end
end
"""

# A webhook delivery, stored in the same script that makes its event happen (so a result
# is never stored without the delivery it owes): if the record asked for ``event``, a
# delivery hash holding the record as it is, due now, and a wake-up for the deliverer.
WEBHOOK_LUA = """
local function webhook(event, record, id, job, delivery, due, wake)
  if not record.webhook then return end
  local hook = cjson.decode(record.webhook)
  for _, wanted in ipairs(hook.events) do
    if wanted == event then
      local now = redis.call('TIME')
      local ts = now[1] + now[2] / 1000000
      redis.call('HSET', delivery, 'id', 'msg_' .. id .. '_' .. event, 'invocation', id,
                 'event', event, 'url', hook.url, 'record', cjson.encode(record),
                 'created_at', tostring(ts), 'attempts', 0)
      redis.call('ZADD', due, ts, delivery)
      redis.call('HSET', job, 'webhook_status', 'pending', 'webhook_attempts', 0)
      redis.call('HDEL', job, 'webhook_error')
      redis.call('LPUSH', wake, 1)
      redis.call('LTRIM', wake, 0, 0)
      return
    end
  end
end
"""

# KEYS[1] job, KEYS[2] events channel, KEYS[3..5] the 'completed' webhook delivery, the
# due set, the deliverer's wake-up list, KEYS[6..11] the counters of stats.py
# (invocations, failures, run times, retries, this moment's dashboard bucket, recent),
# KEYS[12] the versions in use (a final status counts the record's version down),
# KEYS[13..17] where a retry goes (see :class:`Requeue`): the list for its message, the
# sent copies, their messages, the list's sequence (or '' for no copy), the delayed set
# (or ''). ARGV: allowed-from (space separated), to, ttl (0 = keep, 'record' = the ttl the
# record was created with), final (1/0: publish, webhook, count), id, the retry's message
# ('' for none), its delivery tag, its member of the delayed set ('' for none) and when it
# is due, then field/value pairs. Returns {changed, previous status}.
TRANSITION = (
    RECORD_LUA
    + WEBHOOK_LUA
    + stats.LUA
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, ''} end
if not string.find(' ' .. ARGV[1] .. ' ', ' ' .. status .. ' ', 1, true) then
  return {0, status}
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], unpack(ARGV, 10))
-- A retry's message goes with the change to 'retrying': no record is ever left retrying
-- without one (a worker killed between two steps would leave it so forever).
if ARGV[6] ~= '' then
  redis.call('LPUSH', KEYS[13], ARGV[6])
  if KEYS[14] ~= '' then
    local seq = redis.call('INCR', KEYS[16])
    redis.call('HSET', KEYS[14], ARGV[5], KEYS[13] .. ' ' .. seq .. ' ' .. ARGV[7])
    redis.call('HSET', KEYS[15], ARGV[5], ARGV[6])
  end
end
if ARGV[8] ~= '' then redis.call('ZADD', KEYS[17], ARGV[9], ARGV[8]) end
local ttl = ARGV[3]
if ttl == 'record' then ttl = redis.call('HGET', KEYS[1], 'ttl') or '3600' end
if ttl ~= '0' then
  redis.call('EXPIRE', KEYS[1], ttl)
  local idempotency = redis.call('HGET', KEYS[1], 'idempotency_key')
  if idempotency then redis.call('EXPIRE', idempotency, ttl) end
end
if ARGV[2] == 'retrying' and KEYS[9] ~= '' then
  redis.call('HINCRBY', KEYS[9], redis.call('HGET', KEYS[1], 'function'), 1)
end
if ARGV[4] == '1' then
  local flat = redis.call('HGETALL', KEYS[1])
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  record.logs = nil  -- read on their own (GET .../logs), not carried to every waiter
  redis.call('PUBLISH', KEYS[2], ARGV[5] .. ' ' .. cjson.encode(record))
  count_down(KEYS[12], record['function'], record.version)
  webhook('completed', record, ARGV[5], KEYS[1], KEYS[3], KEYS[4], KEYS[5])
  if KEYS[6] ~= '' then
    count_finished(ARGV[5], record, KEYS[6], KEYS[7], KEYS[8], KEYS[10], KEYS[11])
  end
end
return {1, status}
"""
)

# An attempt starts: from queued, retrying, or running (its worker vanished and Redis
# redelivered the message). Returns {previous status, attempt, 1 if the previous attempt
# was lost (still running, or marked lost by the parent of a pool child that died)}.
# The first attempt owes the 'start' webhook, if asked for, and counts its queue wait; a
# redelivered one counts as such. KEYS[1] job, KEYS[2..4] the 'start' delivery, the due
# set, the wake-up list, KEYS[5] queue-wait histogram, KEYS[6] redeliveries, KEYS[7..8]
# the message's sent copy (delivered now: dropped); ARGV: now, pid, id.
START = (
    WEBHOOK_LUA
    + stats.LUA
    + """
redis.call('HDEL', KEYS[7], ARGV[3])
redis.call('HDEL', KEYS[8], ARGV[3])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'', 0, 0} end
if status ~= 'queued' and status ~= 'retrying' and status ~= 'running' then
  return {status, 0, 0}
end
local lost = 0
if status == 'running' or redis.call('HDEL', KEYS[1], 'lost') == 1 then lost = 1 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'pid', ARGV[2])
local fn = redis.call('HGET', KEYS[1], 'function')
if attempts == 1 then
  local created = redis.call('HGET', KEYS[1], 'created_at')
  if created and KEYS[5] ~= '' then
    observe(KEYS[5], fn, tonumber(ARGV[1]) - tonumber(created), SECONDS)
  end
  if redis.call('HEXISTS', KEYS[1], 'webhook') == 1 then
    local flat = redis.call('HGETALL', KEYS[1])
    local record = {}
    for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
    webhook('start', record, ARGV[3], KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  end
end
if lost == 1 and KEYS[6] ~= '' then redis.call('HINCRBY', KEYS[6], fn, 1) end
return {status, attempts, lost}
"""
)


# Accept an invocation: its record and its message, or (batching) its stream item and,
# unless one is waiting, a drain trigger -- one command, so a 202 always has both. The
# version must be in the function store (it is counted in use until the invocation
# ends); else nothing is written and the answer is 0.
# With an idempotency key (KEYS[5]) already used, nothing is written and the answer is
# "<invocation id> <body digest>" of the first use.
# KEYS[1] job, KEYS[2] queue list or stream, KEYS[3] armed flag, KEYS[4] trigger's list,
# KEYS[5] idempotency key or '', KEYS[6] the version's record, KEYS[7] versions in use,
# KEYS[8..10] the sent copies, their messages and the list's sequence (a message is kept
# until a worker starts it: :mod:`conveyor.invocations.stranded`).
# ARGV: pending TTL, message ('' for a batch item), armed TTL, trigger, item id, version,
# input, invocation id, body digest, in-use field, then the record's field/value pairs.
SUBMIT = """
if KEYS[5] ~= '' then
  local first = redis.call('GET', KEYS[5])
  if first then return first end
end
if redis.call('EXISTS', KEYS[6]) == 0 then return 0 end
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[8] .. ' ' .. ARGV[9], 'EX', ARGV[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 11))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[7], ARGV[10], 1)
if ARGV[2] ~= '' then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  local seq = redis.call('INCR', KEYS[10])
  redis.call('HSET', KEYS[8], ARGV[8], KEYS[2] .. ' ' .. seq)
  redis.call('HSET', KEYS[9], ARGV[8], ARGV[2])
  return 1
end
redis.call('XADD', KEYS[2], '*', 'id', ARGV[5], 'version', ARGV[6], 'input', ARGV[7])
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('LPUSH', KEYS[4], ARGV[4])
end
return 1
"""


# Remove a finished invocation (a user purging data): its record, output and idempotency
# key (if the key still names it). KEYS[1] job; ARGV[1] function, ARGV[2] id. Returns ''
# when there is no such invocation of that function, its status when unfinished (nothing
# removed), else 'deleted'.
DELETE = (
    RECORD_LUA
    + """
local found = redis.call('HMGET', KEYS[1], 'status', 'function', 'idempotency_key')
if not found[1] or found[2] ~= ARGV[1] then return '' end
if found[1] == 'queued' or found[1] == 'running' or found[1] == 'retrying' then
  return found[1]
end
redis.call('DEL', KEYS[1])
forget_idempotency(found[3], ARGV[2])
return 'deleted'
"""
)


# Take back a submit that Redis could not replicate in time ([redis] min_replicas), while
# no worker has started it: its record, its idempotency key (if the key still names it)
# and its count in use go; a message or stream item already delivered then finds no record
# and is skipped. KEYS[1] job, KEYS[2] versions in use, KEYS[3..4] its sent copy. ARGV[1]
# id. Returns 'withdrawn', or the status that stops it ('' when there is no record).
WITHDRAW = (
    RECORD_LUA
    + """
local found = redis.call('HMGET', KEYS[1], 'status', 'idempotency_key', 'function', 'version')
if not found[1] then return '' end
if found[1] ~= 'queued' then return found[1] end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
forget_idempotency(found[2], ARGV[1])
count_down(KEYS[2], found[3], found[4])
return 'withdrawn'
"""
)

# A running invocation's progress (JSON): only while it runs. KEYS[1] job; ARGV[1] progress.
PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
return 1
"""


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class JobRecord:
    """What the API answers about one invocation."""

    id: str
    function: str
    version: str
    status: JobStatus
    queue: str
    priority: int
    attempts: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    has_output: bool = False
    owner: str | None = None  # the id of the API key that made it
    webhook: dict[str, Any] | None = None  # {"url", "events", "status"?, "attempts"?, ...}
    progress: dict[str, Any] | None = None  # {"fraction", "message", "updated_at"}
    logs: str | None = None  # what the last attempt printed or logged
    notice: str | None = None  # for this answer only, never stored: e.g. not yet replicated

    @classmethod
    def from_hash(cls, invocation_id: str, raw: dict[str, str]) -> JobRecord:
        def opt(field: str) -> float | None:
            value = raw.get(field)
            return float(value) if value else None

        return cls(
            id=invocation_id,
            function=raw["function"],
            version=raw["version"],
            status=JobStatus(raw["status"]),
            queue=raw["queue"],
            priority=int(raw["priority"]),
            attempts=int(raw.get("attempts", 0)),
            created_at=float(raw["created_at"]),
            started_at=opt("started_at"),
            finished_at=opt("finished_at"),
            output=json.loads(raw["output"]) if "output" in raw else None,
            error=json.loads(raw["error"]) if "error" in raw else None,
            has_output="output" in raw,
            owner=raw.get("owner"),
            webhook=webhook_view(raw),
            progress=json.loads(raw["progress"]) if "progress" in raw else None,
            logs=raw.get("logs"),
        )


def webhook_view(raw: dict[str, str]) -> dict[str, Any] | None:
    """A record's webhook as clients see it: where, which events, how delivery went."""
    if "webhook" not in raw:
        return None
    hook: dict[str, Any] = json.loads(raw["webhook"])
    if "webhook_status" in raw:
        hook["status"] = raw["webhook_status"]
        hook["attempts"] = int(raw.get("webhook_attempts", 0))
    if raw.get("webhook_error"):
        hook["last_error"] = raw["webhook_error"]
    return hook


def new_job_fields(
    function: str,
    version: str,
    queue: str,
    priority: int,
    ttl: int,
    *,
    owner: str | None = None,
    webhook: str | None = None,
) -> dict[str, str]:
    """A new record. ``owner``: the id of the API key that made it; ``webhook``: JSON
    ``{"url", "events"}`` of the deliveries it asked for."""
    fields = {
        "function": function,
        "version": version,
        "status": JobStatus.QUEUED,
        "queue": queue,
        "priority": str(priority),
        "attempts": "0",
        "created_at": repr(now()),
        "ttl": str(ttl),
    }
    if owner is not None:
        fields["owner"] = owner
    if webhook is not None:
        fields["webhook"] = webhook
    return fields


@dataclass(frozen=True)
class Requeue:
    """Where a retry goes, written with the transition to ``retrying``: a task message
    pushed onto ``queue_list`` (with a sent copy, keyed by the invocation, for the stranded
    sweep, when ``copied``), and for a batch item its place in the function's delayed set."""

    queue_list: str
    message: str
    delivery_tag: str = ""
    copied: bool = False
    delayed: str = ""  # the delayed set: a batch item's entry waits there until due
    member: str = ""
    due: float = 0.0

    def keys(self) -> list[str]:
        sent = [keyspace.SENT, keyspace.SENT_MESSAGES, keyspace.sent_sequence(self.queue_list)]
        return [self.queue_list, *(sent if self.copied else ["", "", ""]), self.delayed]

    def args(self) -> list[str]:
        return [self.message, self.delivery_tag, self.member, repr(self.due)]


_NO_REQUEUE = ["", "", "", "", ""], ["", "", "", ""]


def transition_args(
    invocation_id: str,
    allowed: tuple[JobStatus, ...],
    to: JobStatus,
    *,
    metrics: bool = True,
    requeue: Requeue | None = None,
    **fields: str,
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of :data:`TRANSITION`.

    A final status publishes the id, stamps finished_at and starts the result's TTL; with
    ``metrics`` (``[metrics] enabled``) it is counted too. ``requeue``: the retry that goes
    with a change to ``retrying``.
    """
    ttl = "0"
    if to.final:
        fields.setdefault("finished_at", repr(now()))
        ttl = "record"
    retry_keys, retry_args = (requeue.keys(), requeue.args()) if requeue else _NO_REQUEUE
    args = [" ".join(allowed), to.value, ttl, "1" if to.final else "0", invocation_id]
    args += retry_args
    for name, value in fields.items():
        args += [name, value]
    return [
        keyspace.job(invocation_id),
        keyspace.EVENTS_CHANNEL,
        keyspace.webhook_delivery(invocation_id, "completed"),
        keyspace.WEBHOOKS_DUE,
        keyspace.WEBHOOKS_WAKE,
        *(_counted_keys() if metrics else _UNCOUNTED),
        keyspace.VERSIONS_IN_USE,
        *retry_keys,
    ], args


def _counted_keys() -> list[str]:
    """The KEYS of TRANSITION's counting (this moment's dashboard bucket among them)."""
    return [
        keyspace.METRICS_INVOCATIONS,
        keyspace.METRICS_FAILURES,
        keyspace.METRICS_DURATION,
        keyspace.METRICS_RETRIES,
        stats.stats_bucket(),
        keyspace.RECENT,
    ]


_UNCOUNTED = [""] * 6  # with [metrics] enabled = false: the scripts count nothing


def start_args(
    invocation_id: str, pid: int, *, metrics: bool = True
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of :data:`START`."""
    counted = [keyspace.METRICS_QUEUE_WAIT, keyspace.METRICS_REDELIVERIES] if metrics else ["", ""]
    return [
        keyspace.job(invocation_id),
        keyspace.webhook_delivery(invocation_id, "start"),
        keyspace.WEBHOOKS_DUE,
        keyspace.WEBHOOKS_WAKE,
        *counted,
        keyspace.SENT,
        keyspace.SENT_MESSAGES,
    ], [repr(time.time()), str(pid), invocation_id]
