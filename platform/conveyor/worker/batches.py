"""Dynamic batching, built on a Redis stream per function (celery-batches requires
celery<5.7, and buffering messages in the worker's parent would need prefetching, which
would let a backlog hide urgent work).

How it works:

1. The API stores an invocation of a batching function as usual (its job record), but
   appends the item to the stream ``conveyor:batch:<fn>`` instead of queueing a task. In
   the same transaction, the submit script queues one ``conveyor.batch`` trigger task unless one
   is already waiting (the ``batch-armed`` flag).
2. A worker process running the trigger clears the flag (so later items arm a new
   trigger), then reads up to ``max_batch_size`` items with a consumer group, waiting until
   ``max_wait_ms`` after the oldest item arrived for more; items already queued are taken
   at once. If more are waiting it arms the next trigger at once, so a backlog is drained
   by as many processes as are free. It runs ``predict_batch`` once, stores every item's
   result in its own record, and only then acknowledges the items (XACK). While items are
   still waiting and nothing else waits on the queue, it runs the next batch itself (for
   up to a second), so a backlog does not pay a trigger's trip through the worker's parent
   per batch. Items left over re-arm a trigger.
3. With ``[limits] concurrency`` or ``rate`` a batch counts as its items: before it reads
   any, the trigger takes as many places as there are free slots (up to max_batch_size)
   and a turn of the rate for each (``worker/places.py``); with none free, or before its
   turn, the trigger is parked as an invocation's message would be, and a slot let go (or
   the turn, come) moves it back to its queue. The items it read then hold a slot each,
   as single invocations do, and unused places and turns are given back.
4. An item that fails fails alone; a retryable one waits in ``batch-delayed`` for its
   backoff, with a trigger scheduled for then.
5. The supervising parent knows what a batch holds (``batch-run:<task id>``): when a child
   dies it puts the items back on the stream; at the hard limit it fails them. While the
   worker lives its parent claims them again every third of ``[worker]
   visibility_timeout``; items of a worker that vanished entirely stay pending in the
   group, and the next trigger (Redis redelivers the dead worker's) claims them once idle
   two thirds of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded

from conveyor import context
from conveyor.broker.messages import Route, encode_batch_trigger
from conveyor.context import InvocationContext
from conveyor.db import keyspace, replication
from conveyor.db.scripts import Scripts, script
from conveyor.errors import ConveyorError
from conveyor.functions.loader import LoadedFunction
from conveyor.functions.manifest import Manifest
from conveyor.invocations.records import InvocationStatus, Requeue
from conveyor.log import get_logger
from conveyor.metrics import db as stats
from conveyor.runtime.capture import Captured
from conveyor.worker.executor import (
    Executor,
    alive,
    bind,
    hard_limit_error,
    soft_limit_error,
)
from conveyor.worker.files import Attempt
from conveyor.worker.places import Places

log = get_logger(__name__)

DRAIN_FOR = 1.0  # seconds one trigger task goes on running batches of a backlog

ARM = script("worker", "arm")
MOVE_DUE = script("worker", "move_due")


@dataclass(frozen=True)
class Item:
    """One waiting invocation, as its stream entry holds it."""

    entry_id: str
    invocation_id: str
    version: str
    input: str  # JSON

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Item:
        return cls(entry_id, fields["id"], fields["version"], fields["input"])

    def fields(self) -> dict[str, str]:
        return {"id": self.invocation_id, "version": self.version, "input": self.input}


class Batches:
    """The ``conveyor.batch`` task's body, and its supervising parent's hooks."""

    def __init__(self, executor: Executor, app: Celery) -> None:
        self.executor = executor
        self.app = app

    @property
    def redis(self) -> redis.Redis:
        return self.executor.redis

    # -- in a pool child ---------------------------------------------------------------

    def drain(self, task: Task[Any, Any], function: str, version: str) -> None:
        """Run batches of ``function``'s waiting items. While more are waiting and nothing
        else waits on its queue, the next batch runs in this same task, up to
        :data:`DRAIN_FOR` seconds (a quarter of the hard limit at most): a backlog pays the
        trigger's trip through Redis and the worker's parent once, not once per batch."""
        bind(function, None, task)
        started = time.monotonic()
        self.redis.delete(keyspace.batch_armed(function))
        manifest = self.executor.manifest(function, version)
        if manifest is None or manifest.batching is None:
            log.error("batch_function_unavailable", version=version)
            return
        stream = keyspace.batch_stream(function)
        self._ensure_group(stream)
        self._take_back(str(task.request.id))
        trigger = Route.of(function, manifest)
        until = started + min(DRAIN_FOR, manifest.limits.timeout / 4)
        while True:
            began = time.monotonic()
            ran = self._one_batch(str(task.request.id), manifest, stream, trigger, version)
            now = time.monotonic()
            if not ran or now + 2 * (now - began) > until or not self._continue(trigger):
                break
        if self._undelivered(stream):
            self.arm(trigger, version)

    def _one_batch(
        self, task_id: str, manifest: Manifest, stream: str, trigger: Route, version: str
    ) -> bool:
        """Collect and run one batch; whether there was one (none: nothing waited, or
        the function's limits parked the trigger)."""
        started = time.monotonic()
        assert manifest.batching is not None
        room = manifest.batching.max_batch_size
        places = Places(
            self.executor.scripts,
            trigger.function,
            manifest,
            self.executor.settings.worker.slot_lease,
        )
        token = ""
        if places.limited:
            token = f"batch:{task_id}:{uuid.uuid4().hex[:8]}"
            park = encode_batch_trigger(self.app, trigger, version)
            room, _ = places.take(token, room, park)
            if room == 0:
                log.info("batch_parked", reason="[limits] concurrency or rate")
                return False
        items = self._collect(manifest, stream, trigger.function, room)
        if places.limited:
            ids = tuple(item.invocation_id for item in items)
            places.settle(token, room, len(ids), ids)
        if not items:
            return False
        run_key = keyspace.batch_run(task_id)
        record = {
            "function": trigger.function,
            "pid": os.getpid(),
            "consumer": _consumer(),  # the parent claims the items again for it
            # the parent never loads code:
            "trigger": encode_batch_trigger(self.app, trigger, version),
            "items": [item.__dict__ for item in items],
        }
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(run_key, json.dumps(record), ex=int(manifest.limits.timeout) + 60)
        _queue_undelivered(pipe, stream)
        if _undelivered(pipe.execute()[1:]):  # the next batch of a backlog runs beside
            self.arm(trigger, version)  # this one, if a process is free
        for item_version, group in _by_version(items).items():
            self._run_version(trigger.function, item_version, group, started)
        self._acknowledge(stream, [item.entry_id for item in items], run_key)
        log.info("batch_finished", size=len(items), duration_ms=_ms(started), task_id=task_id)
        return True

    def _continue(self, trigger: Route) -> bool:
        """Whether to run another batch in this task: items are waiting that no batch took,
        and the queue holds no message but this function's own armed trigger (another
        function's invocation, or a more urgent one, gets the process instead)."""
        pipe = self.redis.pipeline(transaction=False)
        lists = keyspace.queue_lists(trigger.queue)
        for key in lists:
            pipe.llen(key)
        pipe.exists(keyspace.batch_armed(trigger.function))
        _queue_undelivered(pipe, keyspace.batch_stream(trigger.function))
        answers = pipe.execute()
        waiting, armed = sum(answers[: len(lists)]), answers[len(lists)]
        return waiting <= armed and _undelivered(answers[len(lists) + 1 :])

    def _collect(self, manifest: Manifest, stream: str, function: str, size: int) -> list[Item]:
        """Up to ``size`` items: abandoned ones first, then waiting ones, then any that
        arrive until max_wait_ms after the oldest of them arrived. (Retries whose backoff
        is over join the stream first.)"""
        assert manifest.batching is not None
        wait = manifest.batching.max_wait_ms / 1000
        consumer = _consumer()
        # A live worker's parent claims its items again every third of the visibility
        # timeout; a vanished one's are taken once idle two thirds of it, so the trigger
        # Redis redelivers after the timeout finds them even if they were read a little
        # after it was delivered.
        idle_ms = int(self.executor.settings.worker.visibility_timeout * 2000 / 3)
        pipe = self.redis.pipeline(transaction=False)
        self.executor.scripts.call(
            MOVE_DUE,
            client=pipe,
            delayed=keyspace.batch_delayed(function),
            stream=stream,
            now=time.time(),
        )
        pipe.xautoclaim(stream, keyspace.BATCH_GROUP, consumer, idle_ms, count=size)
        claimed = pipe.execute()[1]
        entries = [(eid, fields) for eid, fields in claimed[1] if fields]
        entries += self._read(stream, consumer, size - len(entries), None)
        if entries:
            oldest = min(int(eid.split("-")[0]) for eid, _ in entries) / 1000
            deadline = min(oldest + wait, time.time() + wait)
            while len(entries) < size and (remaining := deadline - time.time()) > 0:
                more = self._read(stream, consumer, size - len(entries), remaining)
                if not more:
                    break
                entries += more
        return [Item.from_entry(eid, fields) for eid, fields in entries]

    def _run_version(self, function: str, version: str, items: list[Item], started: float) -> None:
        """Run the items of one version (a deploy or ``?version=`` mixes versions in a
        stream): each runs the version it was accepted for, or fails saying why not."""
        try:
            fn = self.executor.load(function, version)
        except ConveyorError as exc:
            for item in items:
                if self.executor.start(item.invocation_id) is not None:
                    self.executor.fail(item.invocation_id, exc, started, traceback=False)
            return
        self._run(fn, items, started)

    def _read(
        self, stream: str, consumer: str, count: int, block: float | None
    ) -> list[tuple[str, dict[str, str]]]:
        if count <= 0:
            return []
        answer: Any = self.redis.xreadgroup(
            keyspace.BATCH_GROUP,
            consumer,
            {stream: ">"},
            count=count,
            block=None if block is None else max(1, int(block * 1000)),
        )
        return list(answer[0][1]) if answer else []

    def _run(self, fn: LoadedFunction, items: list[Item], started: float) -> None:
        # One round trip to start every item, and one to store every success.
        pipe = self.redis.pipeline(transaction=False)
        for item in items:
            self.executor.queue_start(pipe, item.invocation_id)
        admitted = []
        for item, answer in zip(items, pipe.execute(), strict=True):
            begun = self.executor.started(item.invocation_id, answer)
            run = self.executor.admitted(fn, item.invocation_id, started, begun)
            if run is not None:
                admitted.append((item, *run))
        if not admitted:
            return
        inputs = [json.loads(item.input) for item, _, _ in admitted]
        contexts = tuple(
            InvocationContext(
                item.invocation_id,
                fn.name,
                fn.version,
                attempt,
                redelivered,
                self.executor.reporter(item.invocation_id),
            )
            for item, attempt, redelivered in admitted
        )
        captured = Captured()
        ttl = fn.manifest.results.ttl
        files = [
            Attempt(self.executor.files, keyspace.record(item.invocation_id), ttl)
            for item, _, _ in admitted
        ]
        self.executor.files.prefetch(fn, inputs)
        try:
            with context.running_batch(contexts), self.executor.capture() as captured:
                outcomes = self.executor.runner.run_batch(
                    fn, inputs, (SoftTimeLimitExceeded,), files
                )
        except SoftTimeLimitExceeded:
            outcomes = [soft_limit_error(fn)] * len(admitted)
        finally:
            self.executor.files.prefetched.clear()
            for bridge in files:
                bridge.cleanup()
        # One predict_batch call's output cannot be told apart by item: each item keeps it.
        logs = captured.text and f"[printed by predict_batch for a batch of {len(admitted)}]\n"
        logs += captured.text
        pipe = self.redis.pipeline(transaction=False)
        for (item, attempt, _), outcome, bridge in zip(admitted, outcomes, files, strict=True):
            if isinstance(outcome, str):
                self.executor.transition(
                    item.invocation_id,
                    (InvocationStatus.RUNNING,),
                    InvocationStatus.SUCCEEDED,
                    pipe=pipe,
                    logs=logs,
                    output=outcome,
                    files=bridge.listed(),
                )
                continue
            delay = self.executor.retry_delay(fn, outcome, attempt)
            if delay is None:
                self.executor.fail(
                    item.invocation_id, outcome, started, logs=logs, folder=fn.folder
                )
            else:
                self.executor.mark_retrying(
                    item.invocation_id,
                    outcome,
                    started,
                    delay,
                    logs=logs,
                    folder=fn.folder,
                    requeue=self._retry_later(fn, item, delay),
                )
        if self.executor.settings.metrics.enabled:
            stats.observe_batch(pipe, fn.name, len(admitted))
        replication.execute(pipe, self.executor.settings, f"a batch of {fn.name}")

    def _retry_later(self, fn: LoadedFunction, item: Item, delay: float) -> Requeue:
        """An item's retry: its entry in the delayed set and a drain trigger due then,
        written with its record's change to ``retrying``."""
        queue_key, message = encode_batch_trigger(
            self.app, Route.of(fn.name, fn.manifest), fn.version, countdown=delay
        )
        return Requeue(
            queue_key,
            message,
            delayed=keyspace.batch_delayed(fn.name),
            member=json.dumps(item.fields()),
            due=time.time() + delay,
        )

    def arm(self, trigger: Route, version: str) -> None:
        """Queue a trigger unless one is already waiting for its function."""
        queue_key, message = encode_batch_trigger(self.app, trigger, version)
        self._arm(trigger.function, queue_key, message)

    def _arm(self, function: str, queue_list: str, trigger: str) -> None:
        self.executor.scripts.call(
            ARM,
            armed=keyspace.batch_armed(function),
            queue_list=queue_list,
            armed_ttl=keyspace.BATCH_ARMED_TTL,
            trigger=trigger,
        )

    def _undelivered(self, stream: str) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        _queue_undelivered(pipe, stream)
        return _undelivered(pipe.execute())

    def _ensure_group(self, stream: str) -> None:
        with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: it exists
            self.redis.xgroup_create(stream, keyspace.BATCH_GROUP, id="0", mkstream=True)

    def _acknowledge(self, stream: str, entry_ids: list[str], run_key: str | None = None) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(stream, keyspace.BATCH_GROUP, *entry_ids)
        pipe.xdel(stream, *entry_ids)
        if run_key is not None:
            pipe.delete(run_key)  # the batch is over: nothing for the parent to put back
        pipe.execute()

    # -- in the supervising parent -----------------------------------------------------

    def _batch(self, task_id: str) -> dict[str, Any] | None:
        raw = self.redis.getdel(keyspace.batch_run(task_id))
        return json.loads(str(raw)) if raw else None

    def timed_out(self, task_id: str, timeout: float | None) -> None:
        """The batch ran past its hard limit: each of its items failed, unless its process
        had died (billiard notices a child that dies early only at the hard limit)."""
        batch = self._batch(task_id)
        if batch is None:
            return
        if not alive(batch["pid"]):
            self._requeue(batch)
            return
        items = [Item(**item) for item in batch["items"]]
        for item in items:
            self.executor.transition(
                item.invocation_id,
                (InvocationStatus.RUNNING,),
                InvocationStatus.FAILED,
                error=json.dumps(hard_limit_error(timeout)),
            )
        self._acknowledge(keyspace.batch_stream(batch["function"]), [i.entry_id for i in items])
        log.warning("batch_finished", task_id=task_id, outcome="timed_out", size=len(items))

    def _take_back(self, task_id: str) -> None:
        """A trigger redelivered after its worker vanished: the batch its last attempt read
        goes back on the stream now (its items' attempts counted as a lost worker's), not
        once they have been idle long enough for a claim."""
        batch = self._batch(task_id)
        if batch is not None and batch.get("consumer") != _consumer():
            log.warning("batch_taken_back", task_id=task_id, size=len(batch["items"]))
            self._requeue(batch)

    def lost(self, task_id: str) -> None:
        """The child running the batch died: its items go back on the stream."""
        batch = self._batch(task_id)
        if batch is not None:
            self._requeue(batch)

    def _requeue(self, batch: dict[str, Any]) -> None:
        stream = keyspace.batch_stream(batch["function"])
        for item in (Item(**item) for item in batch["items"]):
            pipe = self.redis.pipeline(transaction=True)
            pipe.xadd(stream, dict[Any, Any](item.fields()))
            pipe.xack(stream, keyspace.BATCH_GROUP, item.entry_id)
            pipe.xdel(stream, item.entry_id)
            pipe.execute()
            self.executor.worker_lost(item.invocation_id)
        queue_key, message = batch["trigger"]
        self._arm(batch["function"], queue_key, message)


def _queue_undelivered(pipe: Any, stream: str) -> None:
    """Queue on ``pipe`` what :func:`_undelivered` reads (three answers)."""
    pipe.xinfo_stream(stream)
    pipe.xinfo_groups(stream)
    pipe.xlen(stream)


def _undelivered(answers: list[Any]) -> bool:
    """Whether the stream holds items no batch has taken yet (not merely items that
    another, live, batch is still running), from :func:`_queue_undelivered`'s answers."""
    info, groups, length = answers
    delivered = next(g["last-delivered-id"] for g in groups if g["name"] == keyspace.BATCH_GROUP)
    return bool(length) and _id(delivered) < _id(info["last-generated-id"])


def _stranded(client: redis.Redis, function: str, idle: float) -> bool:
    """Whether ``function``'s stream holds items with no trigger armed: items no batch has
    taken (none ever, if its group does not exist yet), or taken ones idle past ``idle``."""
    stream = keyspace.batch_stream(function)
    pipe = client.pipeline(transaction=False)
    pipe.exists(keyspace.batch_armed(function))
    pipe.xlen(stream)
    armed, length = pipe.execute()
    if armed or not length:
        return False
    groups = client.xinfo_groups(stream)
    if not any(g["name"] == keyspace.BATCH_GROUP for g in groups):
        return True  # no trigger ever drained it
    pipe = client.pipeline(transaction=False)  # a fresh one
    _queue_undelivered(pipe, stream)
    pipe.xpending_range(stream, keyspace.BATCH_GROUP, "-", "+", 1, idle=max(1, int(idle * 1000)))
    *undelivered, pending = pipe.execute()
    return _undelivered(undelivered) or bool(pending)


def _by_version(items: list[Item]) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.version, []).append(item)
    return groups


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def _consumer() -> str:
    """This pool process's name in a batch stream's consumer group."""
    return f"{socket.gethostname()}:{os.getpid()}"


def rearm_stranded(
    client: redis.Redis,
    app: Celery,
    serving: dict[str, tuple[str, Manifest]],
    queues: list[str],
    idle: float,
) -> list[str]:
    """Arm a trigger for each batching function of ``queues`` whose stream holds items no
    trigger is coming for: items no batch has taken, or taken ones idle past ``idle``
    seconds (their worker is gone), while no trigger is armed. A Redis restart can end a
    drain before it re-arms (its task fails on the lost connection, and is acked), and the
    next submit arms again, but the last items before a quiet spell would wait for ever.
    The functions armed (``worker/lua/arm.lua`` sets the flag: one trigger whoever sweeps)."""
    armed = []
    scripts = Scripts(client)
    for function, (version, manifest) in serving.items():
        if manifest.batching is None or manifest.target_queue not in queues:
            continue
        if not _stranded(client, function, idle):
            continue
        queue_list, trigger = encode_batch_trigger(app, Route.of(function, manifest), version)
        if scripts.call(
            ARM,
            armed=keyspace.batch_armed(function),
            queue_list=queue_list,
            armed_ttl=keyspace.BATCH_ARMED_TTL,
            trigger=trigger,
        ):
            log.warning("batch_trigger_rearmed", function=function, version=version)
            armed.append(function)
    return armed
