"""The ``conveyor.map`` task: a chunk of a map job's items, in a worker pool child.

A chunk runs its items one after another (a batching function: in full batches), each
with its own time limit (an alarm: the item fails with ``TimeLimitExceeded``, the chunk
goes on), retries and validation, exactly as single invocations of the same version would.
Between items, at most every :data:`SLICE` seconds, it looks whether the job still runs:
after a cancel it starts nothing more. At the end one Lua call stores every result, counts
them, and queues the next chunk (see :mod:`conveyor.maps.db`). If the child dies, the
chunk's message is redelivered and its items run again; results are kept by index, once.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from typing import Any, cast

import redis
from celery import Celery, Task
from celery.exceptions import TimeLimitExceeded, WorkerLostError

from conveyor import context
from conveyor.broker.app import HIGHEST_PRIORITY, broker_priority, kill_now
from conveyor.broker.census import Heartbeats
from conveyor.broker.messages import chunk_message, delay_message
from conveyor.context import InvocationContext
from conveyor.db import keyspace
from conveyor.errors import ConveyorError
from conveyor.functions.loader import LoadedFunction
from conveyor.invocations.records import UNPARK_EVERY
from conveyor.log import get_logger
from conveyor.maps import db as maps
from conveyor.runtime import error_payload
from conveyor.worker.executor import LOST_WORKER_ALLOWANCE, Executor, bind
from conveyor.worker.files import Attempt
from conveyor.worker.places import Places

log = get_logger(__name__)

SLICE = 0.002  # seconds of items between looks at the job's status
CENSUS_EVERY = 5.0
FEED_TRIES = 3
PARKED_TTL = 60  # seconds: a safety net; the parked timer clears it when it runs


class ItemTimeLimitExceeded(Exception):  # noqa: N818  # named as Celery's, which users know
    """One item of a chunk ran past its function's time limit."""


@contextlib.contextmanager
def item_alarm(seconds: float) -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise ItemTimeLimitExceeded(f"the item ran past its time limit of {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _compact(status: str, attempt: int, seconds: float | None, **part: Any) -> str:
    body: dict[str, Any] = {"s": status, "a": attempt}
    if seconds is not None:
        body["d"] = round(seconds * 1000, 3)
    body.update(part)
    return json.dumps(body, separators=(",", ":"))


class Outcomes:
    """What a chunk's items came to, as SETTLE takes them."""

    def __init__(self) -> None:
        self.results: list[str] = []  # flat: index, status, error type, seconds, result
        self.retries: list[str] = []  # flat: entry, due
        self.seconds: list[float] = []
        self.back: list[str] = []  # entries not run: the chunk yielded to more urgent work
        # or found no place under its function's limits: then the job waits parked until
        # this time (0: until a slot is let go)
        self.parked: float | None = None

    def succeeded(self, index: int, attempt: int, seconds: float, output: str) -> None:
        # the output last: a pipeline's fan-in reads it without parsing the rest
        # (pipelines/lua/advance: output_of)
        result = f'{{"s":"succeeded","a":{attempt},"d":{round(seconds * 1000, 3)},"o":{output}}}'
        self.results += [str(index), "succeeded", "", repr(seconds), result]
        self.seconds.append(seconds)

    def failed(self, index: int, attempt: int, seconds: float | None, exc: BaseException) -> None:
        error = error_payload(exc, with_traceback=False)
        result = _compact("failed", attempt, seconds, e=error)
        self.results += [
            str(index),
            "failed",
            error["type"],
            "" if seconds is None else repr(seconds),
            result,
        ]

    def cancelled(self, index: int, attempt: int) -> None:
        self.results += [str(index), "cancelled", "", "", _compact("cancelled", attempt, None)]

    def expired(self, index: int, attempt: int) -> None:
        self.results += [str(index), "expired", "", "", _compact("expired", attempt, None)]

    def never_ran(self, entries: list[str], job_status: str) -> None:
        """Items the chunk will not start: its job was cancelled, or expired at its
        deadline (then so are they)."""
        for item in map(maps.Item.parse, entries):
            if job_status == "expired":
                self.expired(item.index, item.attempt)
            else:
                self.cancelled(item.index, item.attempt)

    def fail_all(self, entries: list[str], exc: BaseException) -> None:
        for item in map(maps.Item.parse, entries):
            self.failed(item.index, item.attempt, None, exc)

    def retry(self, item: maps.Item, due: float) -> None:
        self.retries += [
            maps.entry(item.index, item.attempt + 1, json.dumps(item.input)),
            repr(due),
        ]


def _context(fn: LoadedFunction, job: str, item: maps.Item, redelivered: bool) -> InvocationContext:
    """An item's context: its id is ``<job>:<index>`` (an element of a pipeline's for_each
    step, whose job is "<run>.<step>": ``<run>.<step>.<index>``, its invocation id); it
    reports no progress."""
    sep = "." if "." in job else ":"
    return InvocationContext(
        f"{job}{sep}{item.index}", fn.name, fn.version, item.attempt, redelivered
    )


def _more_urgent(queue: str, priority: int) -> list[str]:
    """The lists of ``queue`` that are consumed before this job's chunks: single
    invocations of the job's priority and more urgent work."""
    chunk_step = min(broker_priority(priority) + 1, HIGHEST_PRIORITY)
    return [keyspace.queue_list(queue, step) for step in range(chunk_step)]


class Lookout:
    """A chunk's looks at its job's status and its queue, asked without waiting: a look is
    sent, and its answer read at the first moment between items after it has arrived (a
    blocking look every few milliseconds cost a seventh of a chunk's time). Then the next
    is sent, at most every :data:`SLICE` seconds. Its own connection, released at the end.
    """

    def __init__(self, client: redis.Redis, job: str, urgent: list[str]) -> None:
        self.pool = client.connection_pool
        self.commands: list[tuple[str, ...]] = [("HGET", keyspace.map_job(job), "status")]
        self.commands += [("LLEN", name) for name in urgent]
        self.conn: Any = None
        self.sent = 0.0  # when the look on its way was sent (0: none is)
        self.answered = 0.0

    def __enter__(self) -> Lookout:
        self.conn = self.pool.get_connection()
        self._send()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is None:
            return
        if self.sent:  # an answer still on its way: the connection is not reusable as is
            self.conn.disconnect()
        self.pool.release(self.conn)

    def _send(self) -> None:
        self.conn.send_packed_command(self.conn.pack_commands(self.commands))
        self.sent = time.perf_counter()

    def answer(self) -> tuple[str, bool] | None:
        """(the job's status, more urgent work waits), if a look's answer has come; then the
        next look is sent once :data:`SLICE` has passed since the last."""
        if self.sent and self.conn.can_read(timeout=0):
            status, *lengths = [self.conn.read_response() for _ in self.commands]
            self.sent, self.answered = 0.0, time.perf_counter()
            return str(status or ""), any(int(n) for n in lengths)
        if not self.sent and time.perf_counter() - self.answered > SLICE:
            self._send()
        return None


class Chunks:
    """The ``conveyor.map`` task's body, and what its supervising parent does."""

    def __init__(self, executor: Executor, app: Celery) -> None:
        self.executor = executor
        self.app = app
        self._workers: tuple[float, dict[str, int]] = (-CENSUS_EVERY, {})

    @property
    def redis(self) -> redis.Redis:
        return self.executor.redis

    # -- in a pool child ---------------------------------------------------------------

    def run(self, task: Task[Any, Any], job: str, function: str, version: str, chunk: int) -> None:
        bind(function, None, task)
        if chunk < 0:  # a timer: retries came due, or a slot or turn came (parked)
            self.redis.delete(keyspace.map_parked(job))
            self.feed(job)
            return
        task_id = str(task.request.id)
        began, starts, queue, priority = self.executor.scripts.call(
            maps.BEGIN,
            job=keyspace.map_job(job),
            active=keyspace.map_active(job),
            sent=keyspace.SENT,
            sent_messages=keyspace.SENT_MESSAGES,
            task_id=task_id,
            chunk=chunk,
        )
        entries = [str(e) for e in self.redis.lrange(keyspace.map_chunk(job, chunk), 0, -1)]
        if not entries:
            return  # settled already (by the parent, or a first delivery)
        outcomes = Outcomes()
        if not began:
            outcomes.never_ran(entries, str(self.redis.hget(keyspace.map_job(job), "status")))
        else:
            try:
                fn = self.executor.load(function, version)
            except ConveyorError as exc:
                outcomes.fail_all(entries, exc)
            else:
                allowed = fn.manifest.retries.max + 1 + LOST_WORKER_ALLOWANCE
                if int(starts) > allowed:
                    why = (
                        f"the worker process died running this item's chunk {int(starts) - 1} times"
                    )
                    outcomes.fail_all(entries, WorkerLostError(why))
                else:
                    urgent = _more_urgent(str(queue), int(priority))
                    self._run_items(
                        fn,
                        job,
                        chunk,
                        entries,
                        outcomes,
                        urgent=urgent,
                        redelivered=int(starts) > 1,
                    )
        self.settle(job, chunk, task_id, outcomes)

    def _run_items(
        self,
        fn: LoadedFunction,
        job: str,
        chunk: int,
        entries: list[str],
        out: Outcomes,
        *,
        urgent: list[str],
        redelivered: bool,
    ) -> None:
        """Run the items in order (parsed as they come). After the first one (or batch),
        and then every :data:`SLICE` seconds, look: a cancel stops the chunk; work more
        urgent than the chunk waiting in its queue makes it give its other items back.
        Under [limits] concurrency or rate each item (or batch) first takes its places and
        turns (``worker/places.py``): the chunk keeps its places from one item to the next
        (each take gives them back and takes them again in one step) and ends them when it
        ends; with none to be had soon it gives its other items back and the job waits
        parked (:meth:`settle`)."""
        limit = fn.manifest.limits.timeout
        size = fn.manifest.batching.max_batch_size if fn.manifest.batching else 1
        places = Places(
            self.executor.scripts, fn.name, fn.manifest, self.executor.settings.worker.slot_lease
        )
        token = f"map:{job}:{chunk}"
        start = held = used = 0

        def end_places() -> None:
            if held:  # the places last taken, ``used`` of them by the last group
                places.settle(token, held, used)

        with contextlib.ExitStack() as stack:
            stack.callback(end_places)
            lookout = stack.enter_context(Lookout(self.redis, job, urgent))
            while start < len(entries):
                seen = lookout.answer() if start else None
                if seen is not None:
                    status, waiting = seen
                    if status != "running":
                        out.never_ran(entries[start:], status)
                        return
                    if waiting:  # single invocations (or a more urgent job): let them go
                        out.back += entries[start:]
                        return
                room = size
                if places.limited:  # a whole group's places and turns, always under token
                    held = room = self._take(places, token, size, out)
                    if room == 0:
                        out.back += entries[start:]
                        return
                group = entries[start : start + room]
                used = len(group)
                self._run_group(fn, job, group, out, limit=limit, redelivered=redelivered)
                start += room

    @staticmethod
    def _take(places: Places, token: str, size: int, out: Outcomes) -> int:
        """Places for up to ``size`` items: a turn of the rate that comes within
        :data:`UNPARK_EVERY` is waited for here; otherwise none, and ``out.parked`` says
        until when the job waits (0: until a slot is let go)."""
        while True:
            room, turn = places.take(token, size)
            if room or turn is None or turn - time.time() > UNPARK_EVERY:
                break
            time.sleep(max(0.0, turn - time.time()))
        if not room:
            out.parked = turn or 0.0
        return room

    def _run_group(
        self,
        fn: LoadedFunction,
        job: str,
        entries: list[str],
        out: Outcomes,
        *,
        limit: float,
        redelivered: bool,
    ) -> None:
        group = [maps.Item.parse(e) for e in entries]
        contexts = tuple(_context(fn, job, item, redelivered) for item in group)
        files = [
            Attempt(self.executor.files, keyspace.map_job(job), fn.manifest.results.ttl)
            for _ in group
        ]
        try:
            if fn.manifest.batching is None:
                with context.running(contexts[0]):
                    self._one(fn, group[0], limit, out, files[0])
            else:
                with context.running_batch(contexts):
                    self._batch(fn, group, limit, out, files)
        finally:
            for attempt in files:
                attempt.cleanup()

    def _one(
        self, fn: LoadedFunction, item: maps.Item, limit: float, out: Outcomes, files: Attempt
    ) -> None:
        began = time.perf_counter()
        try:
            with item_alarm(limit):
                output = self.executor.runner.run(fn, item.input, files)
        except Exception as exc:
            self._failed(fn, item, time.perf_counter() - began, exc, out)
        else:
            out.succeeded(item.index, item.attempt, time.perf_counter() - began, output)

    def _batch(
        self,
        fn: LoadedFunction,
        group: list[maps.Item],
        limit: float,
        out: Outcomes,
        files: list[Attempt],
    ) -> None:
        began = time.perf_counter()
        try:
            with item_alarm(limit):
                outcomes = self.executor.runner.run_batch(
                    fn, [i.input for i in group], (ItemTimeLimitExceeded,), files
                )
        except ItemTimeLimitExceeded as exc:
            outcomes = [exc] * len(group)
        each = (time.perf_counter() - began) / len(group)
        for item, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, str):
                out.succeeded(item.index, item.attempt, each, outcome)
            else:
                self._failed(fn, item, each, outcome, out)

    def _failed(
        self, fn: LoadedFunction, item: maps.Item, seconds: float, exc: BaseException, out: Outcomes
    ) -> None:
        if isinstance(exc, ItemTimeLimitExceeded):
            exc = TimeLimitExceeded(str(exc))  # the type single invocations report
        delay = self.executor.retry_delay(fn, exc, item.attempt)
        if delay is None:
            out.failed(item.index, item.attempt, seconds, exc)
        else:
            out.retry(item, time.time() + delay)

    # -- settling and feeding (children and parent) -------------------------------------

    def settle(self, job: str, chunk: int, task_id: str, out: Outcomes) -> None:
        """Store a chunk's outcome and queue the next chunk, if the window has room."""
        fields = cast(dict[str, str], self.redis.hgetall(keyspace.map_job(job)))
        if not fields:
            return  # the job expired
        seen = repr(sum(out.seconds) / len(out.seconds)) if out.seconds else ""
        k, size = int(fields.get("chunks", 0)), self._size(fields, seen)
        message = ("", "", "")
        room = int(fields.get("outstanding", 0)) - 1 < self._window(fields)
        if fields.get("status") == "running" and room and out.parked is None:
            message = chunk_message(self.app, job, fields, k, size)
        queue_key = message[0] or keyspace.queue_list(fields["queue"], 0)
        outcomes: list[Any] = [len(out.results) // 5, *out.results]
        outcomes += [len(out.retries) // 2, *out.retries, len(out.back), *out.back]
        timer_key, timer = "", ""
        if out.retries:  # written with the retries: they never wait without a timer
            due = min(float(d) for d in out.retries[1::2])
            timer_key, timer = delay_message(self.app, job, fields, due - time.time())
        outcomes.append(timer)
        metrics = self.executor.settings.metrics.enabled
        fed, _, earliest, *stop = self.executor.scripts.call(
            maps.SETTLE,
            **maps.settle_values(job, chunk, k, queue_key, metrics=metrics, timer_key=timer_key),
            id=job,
            now=repr(time.time()),
            task_id=task_id,
            chunk_number=chunk,
            item_seconds=seen,
            next_k=k,
            next_n=size,
            next_message=message[1],
            next_task_id=message[2],
            function_name=fields["function"],
            outcomes=outcomes,
        )
        if stop:  # a pipeline's step failed: the chunks of its siblings stop
            kill_now(self.app, [str(task) for task in stop])
        if out.parked is not None:
            self._park(job, fields, out.parked)
        elif message[1] and not fed:
            self.feed(job)  # another feeder took chunk k: feed with the next number
        elif earliest and not fed and not out.retries:
            self._timer(job, fields, float(earliest) - time.time())

    def feed(self, job: str) -> None:
        """Queue chunks while the job's window has room (and items are waiting)."""
        for _ in range(FEED_TRIES):
            fields = cast(dict[str, str], self.redis.hgetall(keyspace.map_job(job)))
            if fields.get("status") != "running" or int(
                fields.get("outstanding", 0)
            ) >= self._window(fields):
                return
            k = int(fields.get("chunks", 0))
            queue_key, message, task_id = chunk_message(
                self.app, job, fields, k, self._size(fields, "")
            )
            fed = self.executor.scripts.call(
                maps.FEED,
                **maps.feed_values(job, k, queue_key),
                k=k,
                n=self._size(fields, ""),
                message=message,
                now=repr(time.time()),
                task_id=task_id,
            )
            if not fed:
                earliest = self.redis.zrange(keyspace.map_retries(job), 0, 0, withscores=True)
                if earliest and int(fields.get("outstanding", 0)) == 0:
                    self._timer(job, fields, float(earliest[0][1]) - time.time())
                if int(cast(str, self.redis.hget(keyspace.map_job(job), "chunks") or 0)) == k:
                    return  # nothing to feed (not a lost race)

    def _park(self, job: str, fields: dict[str, str], turn: float) -> None:
        """After the chunk gave its items back for want of a slot (``turn`` 0) or a turn
        of the rate: a timer that feeds the job waits parked, as an invocation's message
        would, until a slot is let go or the turn comes (written after the settle, so the
        feed it starts finds the items given back). One timer per job waits: the feed it
        starts queues chunks for every item given back meanwhile."""
        if not self.redis.set(keyspace.map_parked(job), "1", nx=True, ex=PARKED_TTL):
            return
        queue_key, message = delay_message(self.app, job, fields, 0)
        function = fields["function"]
        if turn:
            self.redis.zadd(keyspace.rate_parked(function), {f"{queue_key} {message}": turn})
        else:
            self.redis.rpush(keyspace.parked(function), f"{queue_key} {message}")

    def _timer(self, job: str, fields: dict[str, str], seconds: float) -> None:
        queue_key, message = delay_message(self.app, job, fields, seconds)
        self.redis.lpush(queue_key, message)

    def _size(self, fields: dict[str, str], seen: str) -> int:
        settings = self.executor.settings.map
        item_seconds = float(seen or fields.get("item_seconds") or 0) or None
        batch = int(fields.get("batch", 0))
        return maps.chunk_size(batch, item_seconds, settings.chunk_seconds, settings.max_chunk)

    def _window(self, fields: dict[str, str]) -> int:
        """Chunks of one job at once: [map] window per live worker process of its queue."""
        at, workers = self._workers
        if time.monotonic() - at > CENSUS_EVERY:
            workers = {}
            for beat in Heartbeats(self.redis).workers():
                for queue in beat.get("queues", []):
                    workers[queue] = workers.get(queue, 0) + int(beat.get("concurrency", 1))
            self._workers = (time.monotonic(), workers)
        return maps.window(workers.get(fields["queue"], 0), self.executor.settings.map.window)

    # -- in the supervising parent -----------------------------------------------------

    def timed_out(self, task_id: str, kwargs: dict[str, Any], timeout: float | None) -> None:
        """The chunk ran past its hard limit: its items without a result failed."""
        self._fail_rest(
            task_id, kwargs, f"the chunk ran past its hard time limit of {timeout}s; it was killed"
        )

    def keep_copy(self, request: Any) -> None:
        """A chunk whose attempt Celery cancelled when it lost the broker: kombu is to
        redeliver its message from ``unacked``, but a Redis restart at that moment can
        lose it, and the job would wait for ever. A copy as ``maps/lua/chunks.lua`` keeps
        one (dropped by ``begin.lua`` when the chunk runs again) lets the stranded sweep
        push it when it is found nowhere."""
        kwargs = request.kwargs or {}
        job, raw = kwargs.get("job"), getattr(request.message, "_raw", None)
        if job is None or int(kwargs.get("chunk", -1)) < 0 or not isinstance(raw, dict):
            return
        properties = raw.get("properties") or {}
        routing_key = (request.delivery_info or {}).get("routing_key")
        queue_list = keyspace.queue_list(str(routing_key), int(properties.get("priority") or 0))
        tag = str(properties.get("delivery_tag") or request.id)
        seq = self.redis.incr(keyspace.sent_sequence(queue_list))
        entry = f"{queue_list} {seq} {tag} {keyspace.map_job(job)}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keyspace.SENT, request.id, entry)
        pipe.hset(keyspace.SENT_MESSAGES, request.id, json.dumps(raw))
        pipe.execute()

    def lost(self, task_id: str, kwargs: dict[str, Any]) -> None:
        """The child died. A running job's chunk is redelivered and runs again; a cancelled
        or expired job's (its chunk was killed on purpose) settles now: the item it was
        running cancelled, the others cancelled or, past the job's deadline, expired."""
        job = kwargs.get("job")
        if job is None or int(kwargs.get("chunk", -1)) < 0:
            return
        status = str(self.redis.hget(keyspace.map_job(job), "status"))
        if status not in ("cancelled", "expired"):
            return
        manifest = self.executor.manifest(str(kwargs["function"]), str(kwargs["version"]))
        batching = manifest.batching if manifest is not None else None
        running = batching.max_batch_size if batching is not None else 1
        out = Outcomes()
        unfinished = self._unfinished(job, int(kwargs["chunk"]))
        for k, item in enumerate(unfinished):
            if k < running or status == "cancelled":  # the first item or batch was running
                out.cancelled(item.index, item.attempt)
            else:
                out.expired(item.index, item.attempt)
        self.settle(job, int(kwargs["chunk"]), task_id, out)

    def _fail_rest(self, task_id: str, kwargs: dict[str, Any], why: str) -> None:
        job, chunk = kwargs.get("job"), int(kwargs.get("chunk", -1))
        if job is None or chunk < 0:
            return
        out = Outcomes()
        error = TimeLimitExceeded(why)
        for item in self._unfinished(job, chunk):
            out.failed(item.index, item.attempt, None, error)
        self.settle(job, chunk, task_id, out)

    def _unfinished(self, job: str, chunk: int) -> list[maps.Item]:
        items = [
            maps.Item.parse(str(e))
            for e in self.redis.lrange(keyspace.map_chunk(job, chunk), 0, -1)
        ]
        done = (
            self.redis.hmget(keyspace.map_results(job), [str(i.index) for i in items])
            if items
            else []
        )
        return [item for item, result in zip(items, done, strict=True) if result is None]
