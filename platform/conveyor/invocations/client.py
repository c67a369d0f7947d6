"""Invocations as the API sees them: submit, get, wait, cancel, delete, depths, workers.

Async end to end on ``redis.asyncio``: a submit is one Redis transaction (record + message);
waiting for a result is a future woken by one shared pub/sub subscription per process, so a
thousand waiting clients cost neither threads nor polling.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from redis.exceptions import RedisError

from conveyor.auth.keys import KeyLimits
from conveyor.broker.app import create_celery, kill
from conveyor.broker.census import LIVE_WORKERS, QueueCensus, live_workers_args, parse_workers
from conveyor.broker.messages import Invocation, Route, encode_batch_trigger, encode_message
from conveyor.db import keyspace, replication
from conveyor.db.connections import broker_errors, listener_client, pooled_client
from conveyor.db.gone import drop_gone
from conveyor.db.scripts import Script, Scripts
from conveyor.db.subscription import Subscription, Waiters, long_poll
from conveyor.errors import (
    BrokerUnavailableError,
    IdempotencyConflictError,
    InvocationFinishedError,
    InvocationNotFoundError,
    InvocationUnfinishedError,
    KeyLimitError,
    NotReplicatedError,
    QueueFullError,
    RedisFullError,
    VersionNotFoundError,
)
from conveyor.functions.manifest import per_period, rate_per_second
from conveyor.functions.registry import FunctionSpec
from conveyor.integers import whole_number
from conveyor.invocations.records import (
    ACTIVE,
    DELETE,
    KEY_TAKE,
    RUN,
    SUBMIT,
    TRANSITION,
    UNPARK,
    WITHDRAW,
    InvocationRecord,
    InvocationStatus,
    counted_keys,
    limit_keys,
    new_record_fields,
    stream_keys,
    transition_args,
)
from conveyor.log import get_logger
from conveyor.pipelines.plan import encoded
from conveyor.settings import Settings

log = get_logger(__name__)

_TEMPLATE_ID = "00000000-0000-4000-8000-00000000face"
_TEMPLATE_TAG = "00000000-0000-4000-8000-0000000000da"


class InvocationClient:
    """Submit invocations and read their records; one per process, shared by requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = pooled_client(settings)
        self.celery = create_celery(settings)
        self.scripts = Scripts(self.redis)
        self._trigger_templates: dict[tuple[str, str, int], tuple[str, str]] = {}
        self._census: QueueCensus | None = None
        self._census_at = -math.inf
        # One pub/sub connection for every channel this process listens to.
        self.subscription = Subscription(listener_client(settings))
        self._waiters = Waiters(self.subscription, keyspace.EVENTS_CHANNEL, _finished)
        self._later: set[asyncio.Task[None]] = set()  # kills due after a cancel's grace
        self.full: str | None = None  # why new work is refused (Redis's memory), if it is

    async def start(self) -> None:
        self.subscription.start()

    async def close(self) -> None:
        for task in self._later:
            task.cancel()
        await self.subscription.stop()
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def submit(
        self,
        spec: FunctionSpec,
        raw_input: Any,
        *,
        priority: int | None = None,
        wait: float = 0,
        idempotency_key: str | None = None,
        owner: str | None = None,
        webhook: str | None = None,
        files: Sequence[str] = (),
        sent: Any = None,
        stream: bool = False,
        plan: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        deadline: float | None = None,
        key_limits: KeyLimits | None = None,
        work: int = 1,
    ) -> InvocationRecord:
        """Store the record and enqueue the message in one step; then it is a promise.

        With ``wait``, return the record once final or after ``wait`` seconds. With an
        ``idempotency_key`` used before for this function by the same ``owner`` (the API
        key's id; within the result's TTL), the first invocation is returned instead, and
        nothing runs again; if that first use had another input, priority or webhook,
        :class:`IdempotencyConflictError` is raised. ``webhook`` (JSON ``{"url",
        "events"}``) is stored with the record: the scripts that start and finish the
        invocation queue its deliveries. ``files``: the ids of the files its input refers
        to, held (kept past their expiry) until it ends; ``sent``: the input as the caller
        sent it, before its files were taken (what a retry's body is compared by);
        ``stream``: its function streams (its events are kept in its stream from now on).
        ``plan``: a pipeline's run (:mod:`conveyor.pipelines.plan`): its first step's
        invocations are queued with its record, and its steps' events streamed.
        ``training``: a training (:mod:`conveyor.trainings`) with these options: the
        function's ``[training]`` handler runs, on its queue and with its limits.
        ``deadline`` (a request's Cancel-After, as a time): not started by then, it ends
        ``expired``; still running then, it is cancelled. ``[limits] max_queue_time``
        bounds how long it may wait to start as well. ``key_limits``: those of the API key
        making it (``owner``), checked in the submit's own step (:class:`KeyLimitError`);
        a run counts as ``work`` against them (itself and the elements its input fans out).
        """
        self.refuse_when_full()
        if training is not None:
            spec = replace(spec, manifest=spec.manifest.for_training())
            idempotency_key = idempotency_key and f"training:{idempotency_key}"
        manifest = spec.manifest
        inv = Invocation(
            id=str(uuid.uuid4()),
            function=spec.name,
            version=spec.version,
            input=raw_input,
            queue=manifest.target_queue,
            priority=manifest.queue.priority if priority is None else priority,
            timeout=manifest.limits.timeout,
            soft_timeout=manifest.limits.soft_timeout,
            training=training,
        )
        fields = new_record_fields(
            inv.function,
            inv.version,
            inv.queue,
            inv.priority,
            manifest.results.ttl,
            owner=owner,
            webhook=webhook,
            stream=stream or plan is not None,
        )
        if plan is not None:
            fields["pipeline"] = "1"
        if training is not None:
            fields["training"] = json.dumps(training)
        fields |= deadline_fields(manifest.limits.max_queue_time, deadline)
        idempotency = ""
        if idempotency_key:
            idempotency = keyspace.idempotency(spec.name, owner or "", idempotency_key)
            fields["idempotency_key"] = idempotency
        given = raw_input if sent is None else sent
        digest = _digest(given, priority, webhook) if idempotency else ""
        # Watch before the message exists, so even an instant result is not missed.
        with self._waiters.watch(inv.id) as events:
            if plan is None:
                submit = self._submit_values(spec, inv, fields, idempotency, digest)
                submit |= key_values(owner, key_limits)
            else:
                await self.take_key(spec.name, owner, key_limits, work, idempotency)
                submit = self._run_values(inv, fields, idempotency, digest, plan)
            submit["holders"] = [keyspace.file_holders(file_id) for file_id in files]
            first, notice = await self._store(inv.id, submit, SUBMIT if plan is None else RUN)
            if isinstance(first, str) and first.startswith("limited "):
                _, limit, after = first.split()
                assert key_limits is not None
                raise KeyLimitError(limit, int(after), key_limits)
            if first == "full":
                raise QueueFullError(
                    f"{spec.name!r} has {manifest.limits.max_queued} invocations waiting to start,"
                    " its [limits] max_queued: retry later",
                    function=spec.name,
                    limit=manifest.limits.max_queued or 0,
                )
            if isinstance(first, str):
                return await self._replay(spec.name, idempotency_key or "", first, digest, wait)
            if not first:
                raise VersionNotFoundError(
                    f"version {spec.version} of {spec.name!r} is not in the function store"
                    f" (collected, or Redis lost it); GET /functions/{spec.name}/versions lists"
                    " the retained ones"
                )
            log.info(
                "invocation_queued",
                function=inv.function,
                version=inv.version,
                invocation_id=inv.id,
                queue=inv.queue,
                priority=inv.priority,
            )
            record = InvocationRecord.from_hash(inv.id, fields)
            record = await self._until_final(record, events, wait, None)
            return replace(record, notice=notice) if notice else record

    async def take_key(
        self,
        function: str,
        owner: str | None,
        limits: KeyLimits | None,
        count: int,
        idempotency: str = "",
        *,
        take: bool = True,
    ) -> None:
        """A map job of ``count`` items, or a pipeline's run, asks its API key's limits
        before it is accepted (:class:`KeyLimitError`): it takes a turn of the key's rate
        and counts ``count`` against its daily limit. (A single invocation asks in its
        submit's own step.) An ``idempotency`` key used before asks nothing. Without
        ``take`` the limits are only asked (:meth:`check_key`)."""
        if owner is None or limits is None or not limits.any:
            return
        values = key_values(owner, limits)
        del values["usage"]
        with broker_errors():
            answer = await self.scripts.call(
                KEY_TAKE,
                **values,
                idempotency=idempotency,
                rejections=keyspace.METRICS_REJECTIONS if self.settings.metrics.enabled else "",
                function_name=function,
                count=str(count),
                take="1" if take else "0",
            )
        if str(answer).startswith("limited "):
            _, limit, after = str(answer).split()
            raise KeyLimitError(limit, int(after), limits)

    async def check_key(self, function: str, owner: str | None, limits: KeyLimits) -> None:
        """:class:`KeyLimitError` if the key's limits would refuse one more request now: a
        request that stores files asks before it stores any."""
        await self.take_key(function, owner, limits, 1, take=False)

    async def _store(
        self, invocation_id: str, submit: dict[str, Any], accept: Script
    ) -> tuple[Any, str | None]:
        """Run ``accept`` (:data:`SUBMIT` or a pipeline's :data:`RUN`): its answer, and a
        notice for the caller. With ``[redis] min_replicas``, in a pipeline with WAIT, and
        a submit the replicas did not confirm in time is withdrawn (see
        :meth:`_withdraw_unreplicated`)."""
        with broker_errors():
            if not replication.wanted(self.settings):
                return await self.scripts.call(accept, **submit), None
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.scripts.call(accept, client=pipe, **submit)  # queued on the pipe
                (first,), confirmed = await replication.execute_async(pipe, self.settings)
        if first == 1 and confirmed is not None and confirmed < self.settings.redis.min_replicas:
            return first, await self._withdraw_unreplicated(invocation_id, confirmed)
        return first, None

    async def _withdraw_unreplicated(self, invocation_id: str, confirmed: int) -> str:
        """Answer a submit the replicas did not confirm: withdrawn (it will not run), a
        :class:`NotReplicatedError` (a 503); or, when a worker started it already, a
        warning for its 202. A client retries a 503 (HTTP libraries do so on Retry-After):
        one that runs anyway must not be answered 503, or it would run twice."""
        wanted, waited = self.settings.redis.min_replicas, self.settings.redis.replica_timeout
        with broker_errors():
            outcome = await self.scripts.call(
                WITHDRAW,
                record=keyspace.record(invocation_id),
                in_use=keyspace.VERSIONS_IN_USE,
                sent=keyspace.SENT,
                sent_messages=keyspace.SENT_MESSAGES,
                waiting=keyspace.WAITING,
                id=invocation_id,
                usage=keyspace.KEY_USAGE,
            )
        accepted = outcome not in ("withdrawn", "")
        log.warning(
            "submit_not_replicated",
            invocation_id=invocation_id,
            replicas=confirmed,
            min_replicas=wanted,
            outcome="kept" if accepted else "withdrawn",
        )
        short = (
            f"{confirmed} of the {wanted} replicas [redis] min_replicas asks for confirmed"
            f" invocation {invocation_id} within {waited:g} s"
        )
        if not accepted:
            raise NotReplicatedError(
                f"not accepted: {short}, so it was withdrawn and will not run; send it again",
                invocation_id=invocation_id,
                accepted=False,
            )
        return (
            f"not yet replicated: {short}, but a worker had already started it ({outcome}):"
            " it runs; it would be lost only if the primary failed before its replicas"
            " catch up"
        )

    async def _replay(
        self, function: str, key: str, first: str, digest: str, wait: float
    ) -> InvocationRecord:
        invocation_id, _, first_digest = first.partition(" ")
        if first_digest != digest:
            raise IdempotencyConflictError(
                f"Idempotency-Key {key!r} was used for invocation {invocation_id} with another"
                " input, priority or webhook; use a new key for a different request"
            )
        log.info("invocation_replayed", function=function, invocation_id=invocation_id)
        return await self.wait(invocation_id, wait, function)

    def _submit_values(
        self,
        spec: FunctionSpec,
        inv: Invocation,
        fields: dict[str, str],
        idempotency: str,
        digest: str,
    ) -> dict[str, Any]:
        """The keys and arguments of :data:`SUBMIT`: a task message, or (batching, see
        :mod:`conveyor.worker.batches`) a stream item and a drain trigger."""
        common = self._accept_values(inv, fields, idempotency, digest)
        limit = spec.manifest.limits.max_queued
        common |= {
            "waiting": keyspace.WAITING,
            "deadlines": keyspace.DEADLINES,
            "rejections": keyspace.METRICS_REJECTIONS if self.settings.metrics.enabled else "",
            "function_name": inv.function,
            "max_queued": "" if limit is None else str(limit),
        }
        if spec.manifest.batching is None:
            queue_key, message = encode_message(self.celery, inv)
            return common | {
                "queue": queue_key,
                "sent_sequence": keyspace.sent_sequence(queue_key),
                "message": message,
                **dict.fromkeys(("armed", "trigger_list", "trigger"), ""),
                **dict.fromkeys(("item_id", "item_version", "item_input"), ""),
                "armed_ttl": 0,
            }
        trigger_key, trigger = self._trigger(spec, inv.priority)
        return common | {
            "queue": keyspace.batch_stream(inv.function),
            "sent_sequence": "",
            "message": "",
            "armed": keyspace.batch_armed(inv.function),
            "trigger_list": trigger_key,
            "trigger": trigger,
            "armed_ttl": keyspace.BATCH_ARMED_TTL,
            "item_id": inv.id,
            "item_version": inv.version,
            "item_input": json.dumps(inv.input),
        }

    def _run_values(
        self,
        inv: Invocation,
        fields: dict[str, str],
        idempotency: str,
        digest: str,
        plan: dict[str, Any],
    ) -> dict[str, Any]:
        """The keys and arguments of :data:`RUN`: a pipeline run and its first step."""
        return self._accept_values(inv, fields, idempotency, digest) | {
            "events": keyspace.EVENTS_CHANNEL,
            "due": keyspace.WEBHOOKS_DUE,
            "wake": keyspace.WEBHOOKS_WAKE,
            **counted_keys(self.settings.metrics.enabled),
            "plan": encoded(plan),
            "input": json.dumps(inv.input),
            "deadlines": keyspace.DEADLINES,
        }

    def _accept_values(
        self, inv: Invocation, fields: dict[str, str], idempotency: str, digest: str
    ) -> dict[str, Any]:
        """What :data:`SUBMIT` and :data:`RUN` both take (invocations/accept)."""
        return {
            "record": keyspace.record(inv.id),
            "idempotency": idempotency,
            "version_record": keyspace.function_version(inv.function, inv.version),
            "in_use": keyspace.VERSIONS_IN_USE,
            "sent": keyspace.SENT,
            "sent_messages": keyspace.SENT_MESSAGES,
            "pending_ttl": self.settings.results.pending_ttl,
            "id": inv.id,
            "digest": digest,
            **stream_keys(inv.id),
            "in_use_field": keyspace.in_use(inv.function, inv.version),
            "fields": [value for pair in fields.items() for value in pair],
        }

    def _trigger(self, spec: FunctionSpec, priority: int) -> tuple[str, str]:
        """A fresh trigger message for ``spec``: a cached template with new ids, since
        most submits find a trigger already armed and discard theirs."""
        cache_key = (spec.name, spec.version, priority)
        template = self._trigger_templates.get(cache_key)
        if template is None:
            route = Route.of(spec.name, spec.manifest, priority)
            queue_key, message = encode_batch_trigger(
                self.celery, route, spec.version, task_id=_TEMPLATE_ID
            )
            template = (
                queue_key,
                message.replace(json.loads(message)["properties"]["delivery_tag"], _TEMPLATE_TAG),
            )
            self._trigger_templates[cache_key] = template
        queue_key, message = template
        fresh = message.replace(_TEMPLATE_ID, str(uuid.uuid4()))
        return queue_key, fresh.replace(_TEMPLATE_TAG, str(uuid.uuid4()))

    async def get(self, invocation_id: str, function: str | None = None) -> InvocationRecord:
        with broker_errors():
            raw = await self.redis.hgetall(keyspace.record(invocation_id))
            if not raw:
                raw = cast(Any, await self._element(invocation_id))
        if not raw or (function is not None and raw.get("function") != function):
            where = f" of function {function!r}" if function else ""
            raise InvocationNotFoundError(
                f"no invocation {invocation_id!r}{where} (never submitted, deleted, or its"
                " result expired)"
            )
        return InvocationRecord.from_hash(invocation_id, cast(dict[str, str], raw))

    async def _element(self, invocation_id: str) -> dict[str, str]:
        """An element of a pipeline's for_each step ("<run>.<step>.<index>"), which runs as
        an item of the step's map job: its record, as the job's result for it says."""
        job_id, _, index = invocation_id.rpartition(".")
        if whole_number(index) is None or not job_id:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keyspace.map_job(job_id))
            pipe.hget(keyspace.map_results(job_id), index)
            job, compact = await pipe.execute()
        if job.get("kind") != "step" or int(index) >= int(job.get("total", 0)):
            return {}
        return element_fields(invocation_id, job, compact)

    async def wait(
        self, invocation_id: str, timeout: float, function: str | None = None
    ) -> InvocationRecord:
        """The record once final, or as it stands after ``timeout`` seconds."""
        with self._waiters.watch(invocation_id) as events:
            record = await self.get(invocation_id, function)
            return await self._until_final(record, events, timeout, function)

    async def _until_final(
        self,
        record: InvocationRecord,
        events: asyncio.Queue[InvocationRecord | None],
        timeout: float,
        function: str | None,
    ) -> InvocationRecord:
        async def read(event: InvocationRecord | None) -> InvocationRecord:
            # None: the listener reconnected and may have missed the event; read it.
            return event or await self.get(record.id, function)

        return await long_poll(record, lambda r: r.status.final, events, timeout, read)

    async def cancel(
        self,
        invocation_id: str,
        function: str | None = None,
        grace: float = 0.0,
        reason: str = "cancelled by request",
    ) -> InvocationRecord:
        """Cancel a queued or running invocation; a running attempt is killed. A streaming
        one's generator is closed at its next yield instead (its ``finally`` runs): it is
        killed only if it is still running ``grace`` seconds later."""
        record = await self.get(invocation_id, function)
        values = transition_args(
            invocation_id,
            ACTIVE,
            InvocationStatus.CANCELLED,
            metrics=self.settings.metrics.enabled,
            error=json.dumps({"type": "Cancelled", "message": reason}),
        )
        with broker_errors():
            changed, previous, *stop = await self.scripts.call(TRANSITION, **values)
        if not changed:
            if not previous:
                raise InvocationNotFoundError(f"no invocation {invocation_id!r}")
            raise InvocationFinishedError(
                f"invocation {invocation_id!r} already {previous}; nothing to cancel"
            )
        if previous == InvocationStatus.RUNNING and record.streaming and grace > 0:
            self._kill_later(invocation_id, grace)
        elif previous in (InvocationStatus.RUNNING, InvocationStatus.RETRYING):
            # Killing the pool process is the only way to stop arbitrary user code.
            await kill(self.celery, invocation_id)
        for step in stop:  # a pipeline run's steps that were running
            await kill(self.celery, str(step))
        log.info("invocation_cancelled", function=record.function, invocation_id=invocation_id)
        return await self.get(invocation_id, function)

    async def check_memory(self) -> None:
        """Look at Redis's memory against ``[redis] max_memory_bytes`` or
        ``max_memory_fraction``: past it, :meth:`refuse_when_full` refuses new work."""
        cap_bytes = self.settings.redis.max_memory_bytes
        fraction = self.settings.redis.max_memory_fraction
        if cap_bytes is None and fraction is None:
            return
        with broker_errors():
            memory = await self.redis.info("memory")
        used, ceiling = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        caps = [c for c in (cap_bytes, fraction and ceiling and int(fraction * ceiling)) if c]
        cap = min(caps) if caps else None
        was = self.full
        self.full = None
        if cap is not None and used > cap:
            self.full = (
                f"Redis holds {used} bytes, past the {cap} bytes [redis] max_memory_bytes /"
                " max_memory_fraction allow for new work: retry once results expire or are"
                " deleted (everything already accepted still runs)"
            )
        if self.full != was:
            log.warning("redis_memory", used=used, cap=cap, refusing=self.full is not None)

    def refuse_when_full(self) -> None:
        """:class:`RedisFullError` (503) while Redis is past its memory cap."""
        if self.full is not None:
            raise RedisFullError(self.full)

    async def waiting(self, function: str) -> int:
        """How many of ``function``'s submitted invocations wait to start."""
        low, high = _waiting_range(function)
        with broker_errors():
            return int(await self.redis.zlexcount(keyspace.WAITING, low, high))

    async def purge(self, function: str) -> int:
        """Cancel every invocation of ``function`` waiting to start (queued, or retrying):
        how many. Their messages are dropped when a worker takes them."""
        low, high = _waiting_range(function)
        with broker_errors():
            members = await self.redis.zrangebylex(keyspace.WAITING, low, high)
        error = {
            "type": "Cancelled",
            "message": f"purged: every invocation of {function!r} waiting to start was"
            f" cancelled (POST /functions/{function}/purge)",
        }
        purged = 0
        waiting = (InvocationStatus.QUEUED, InvocationStatus.RETRYING)
        for member in members:
            invocation_id = str(member).partition("\0")[2]
            changed, previous = await self._change(
                invocation_id, waiting, InvocationStatus.CANCELLED, error=json.dumps(error)
            )
            if not previous:  # its record expired while it waited: forget it
                with broker_errors():
                    await self.redis.zrem(keyspace.WAITING, member)
            purged += int(changed)
        log.info("invocations_purged", function=function, purged=purged)
        return purged

    async def unpark(self, function: str, concurrency: int | None, rated: bool) -> int:
        """Free ``function``'s slots whose worker is gone and move as many parked
        invocations back to their queues, and those whose rate turn came: how many."""
        with broker_errors():
            keys = limit_keys(function, limited=concurrency is not None, rated=rated)
            del keys["rate_key"]  # turns that came are read from rate_parked alone
            moved = await self.scripts.call(
                UNPARK,
                **keys,
                now=repr(time.time()),
                concurrency=str(concurrency or 0),
            )
        return int(moved)

    async def forget_gone(self, batch: int = 500) -> int:
        """Take out of the waiting set and the API keys' usage sets (waiting, in flight)
        the ids whose record is gone: it expired while still queued (past its
        ``pending_ttl``) or its key was removed by hand. Left there, they would hold a
        place under ``max_queued`` and a key's limits for good. How many went."""
        gone = 0
        with broker_errors():
            sets = [keyspace.WAITING]
            async for key in self.redis.scan_iter(match=f"{keyspace.KEY_USAGE}*", count=batch):
                if str(key).endswith((":waiting", ":inflight")):
                    sets.append(str(key))
            for name in sets:
                members = [str(m) async for m, _ in self.redis.zscan_iter(name, count=batch)]
                for at in range(0, len(members), batch):
                    gone += await self._forget_gone(name, members[at : at + batch])
        if gone:
            log.warning("waiting_ids_forgotten", count=gone, why="their records are gone")
        return gone

    async def _forget_gone(self, name: str, members: list[str]) -> int:
        # the waiting set's members are "<function>\0<id>"; the usage sets' are ids
        ids = [m.rpartition("\0")[2] for m in members]
        return sum(not there for there in await drop_gone(self.redis, name, members, ids))

    async def running(self, function: str) -> int:
        """How many slots of ``function``'s [limits] concurrency are held."""
        with broker_errors():
            return int(await self.redis.zcount(keyspace.slots(function), time.time(), "+inf"))

    async def due_deadlines(self, limit: int = 100) -> list[str]:
        """Invocations whose deadline has come (see :func:`deadline_fields`)."""
        with broker_errors():
            found = await self.redis.zrangebyscore(
                keyspace.DEADLINES, "-inf", time.time(), start=0, num=limit
            )
        return [str(i) for i in found]

    async def add_deadline(self, member: str, deadline: float) -> None:
        """Something else with a deadline (a map job: ``map <function> <id>``)."""
        with broker_errors():
            await self.redis.zadd(keyspace.DEADLINES, {member: deadline})

    async def forget_deadline(self, invocation_id: str) -> None:
        with broker_errors():
            await self.redis.zrem(keyspace.DEADLINES, invocation_id)

    async def end(
        self,
        invocation_id: str,
        to: InvocationStatus,
        allowed: tuple[InvocationStatus, ...] = (InvocationStatus.RUNNING,),
        **fields: str,
    ) -> bool:
        """End an invocation here rather than in a worker (a training once its version is
        stored; one whose deadline passed before it started): whether it changed."""
        changed, _ = await self._change(invocation_id, allowed, to, **fields)
        return bool(changed)

    async def _change(
        self,
        invocation_id: str,
        allowed: tuple[InvocationStatus, ...],
        to: InvocationStatus,
        **fields: str,
    ) -> tuple[int, str]:
        """Run :data:`TRANSITION` from the API: (changed, previous status; '' no record)."""
        values = transition_args(invocation_id, allowed, to, metrics=self.settings.metrics.enabled)
        values["fields"] += [value for pair in fields.items() for value in pair]
        with broker_errors():
            changed, previous, *_ = await self.scripts.call(TRANSITION, **values)
        return int(changed), str(previous)

    def _kill_later(self, invocation_id: str, grace: float) -> None:
        """Kill the attempt after ``grace`` seconds, if it still runs then (a task that
        ended is no longer active anywhere: the revoke kills nothing)."""

        async def later() -> None:
            await asyncio.sleep(grace)
            await kill(self.celery, invocation_id)

        task = asyncio.create_task(later(), name=f"conveyor-cancel-{invocation_id}")
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def delete(self, invocation_id: str, function: str) -> None:
        """Remove a finished invocation's record and output; unfinished ones stay."""
        with broker_errors():
            outcome = await self.scripts.call(
                DELETE,
                record=keyspace.record(invocation_id),
                stream=keyspace.stream(invocation_id),
                run=keyspace.run(invocation_id),
                run_items=keyspace.run_items(invocation_id),
                files_expiry=keyspace.FILES_EXPIRY,
                function_name=function,
                id=invocation_id,
            )
        if not outcome:
            raise InvocationNotFoundError(
                f"no invocation {invocation_id!r} of function {function!r} (never submitted,"
                " deleted, or its result expired)"
            )
        if outcome != "deleted":
            raise InvocationUnfinishedError(
                f"invocation {invocation_id!r} is {outcome}; cancel it first (POST"
                f" /functions/{function}/results/{invocation_id}/cancel), then delete it"
            )
        log.info("invocation_deleted", function=function, invocation_id=invocation_id)

    async def depths(
        self, queues: list[str], streams: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        """Invocations waiting in each queue: messages over all priority levels, plus the
        items waiting in the stream of each batching function (``streams``: function ->
        its queue)."""
        streams = streams or {}
        with broker_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue in queues:
                    for key in keyspace.queue_lists(queue):
                        pipe.llen(key)
                for function in streams:
                    pipe.xlen(keyspace.batch_stream(function))
                sizes = await pipe.execute()
        steps = len(keyspace.PRIORITY_STEPS)
        depth = {q: sum(sizes[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}
        for queue, items in zip(streams.values(), sizes[len(queues) * steps :], strict=True):
            depth[queue] = depth.get(queue, 0) + items
        return depth

    async def workers(self) -> list[dict[str, Any]]:
        """Live workers, from their heartbeats."""
        with broker_errors():
            beats = await self.scripts.call(LIVE_WORKERS, **live_workers_args())
        return parse_workers(beats)

    async def census(self) -> QueueCensus | None:
        """Who serves each queue (None: Redis cannot tell us now).

        Counted at most once per heartbeat interval and shared by all requests, so a
        request pays for the census only when it is stale; the first to see it stale
        refreshes it while the others read the previous figure.
        """
        now = time.monotonic()
        if now - self._census_at >= self.settings.worker.heartbeat:
            self._census_at = now
            try:
                self._census = QueueCensus.of(await self.workers())
            except BrokerUnavailableError:
                self._census = None
        return self._census


def element_fields(invocation_id: str, job: dict[str, str], compact: str | None) -> dict[str, str]:
    """A record's fields for an item of a for_each step's map job (``compact``: its result,
    None while it waits or runs)."""
    fields = {key: job[key] for key in ("function", "version", "queue", "priority", "ttl")}
    fields |= {"created_at": job["created_at"], "attempts": "0"}
    if compact is None:
        fields["status"] = "cancelled" if job.get("status") == "cancelled" else "queued"
        return fields
    result = json.loads(compact)
    fields |= {"status": result["s"], "attempts": str(result.get("a", 1))}
    if "o" in result:
        fields["output"] = json.dumps(result["o"])
    if "e" in result:
        fields["error"] = json.dumps(result["e"])
    if result.get("d") is not None:
        fields["finished_at"] = repr(float(job["created_at"]) + result["d"] / 1000)
    return fields


def key_counters(owner: str | None, limits: KeyLimits | None) -> dict[str, str] | None:
    """What a pipeline run's plan counts its fan-outs on (pipelines/plan.count_against):
    its key's daily and rate keys and its rate's emission; None for a key without them."""
    if owner is None or limits is None or (limits.daily is None and limits.rate is None):
        return None
    values = key_values(owner, limits)
    return {
        "daily": values["key_daily"] if limits.daily is not None else "",
        "rate": values["key_rate"],
        "emission": values["key_emission"] or "0",
    }


def key_values(owner: str | None, limits: KeyLimits | None) -> dict[str, Any]:
    """The keys and arguments of :data:`SUBMIT` that check an API key's limits."""
    values: dict[str, Any] = {"now": repr(time.time()), "usage": keyspace.KEY_USAGE}
    given = limits if limits is not None and owner is not None else KeyLimits()
    day = time.gmtime()
    rate = given.rate and rate_per_second(given.rate)
    return values | {
        "key_rate": keyspace.key_usage(owner, "rate") if owner and rate else "",
        "key_inflight": keyspace.key_usage(owner, "inflight") if owner else "",
        "key_waiting": keyspace.key_usage(owner, "waiting") if owner else "",
        "key_daily": keyspace.key_usage(owner, time.strftime("daily:%Y%m%d", day)) if owner else "",
        "key_emission": repr(1.0 / rate) if rate else "",
        # a burst of one period's count: "10/s" lets 10 through at once, then one per 0.1 s;
        # at least one ("0.5/s": one now, the next 2 s later, never a negative burst)
        "key_tolerance": repr(max(per_period(given.rate) - 1.0 / rate, 0.0))
        if given.rate and rate
        else "",
        "key_max_inflight": str(given.max_inflight or ""),
        "key_max_queued": str(given.max_queued or ""),
        "key_max_daily": str(given.daily or ""),
        "day_left": str(86400 - (day.tm_hour * 3600 + day.tm_min * 60 + day.tm_sec)),
    }


def deadline_fields(max_queue_time: float | None, deadline: float | None) -> dict[str, str]:
    """A record's ``start_by`` (the earlier of its wait limit and its request's deadline)
    and ``cancel_at`` (the request's deadline), where it has them."""
    fields = {}
    limits = [t for t in (deadline, max_queue_time and time.time() + max_queue_time) if t]
    if limits:
        fields["start_by"] = repr(min(limits))
    if deadline is not None:
        fields["cancel_at"] = repr(deadline)
    return fields


def _waiting_range(function: str) -> tuple[str, str]:
    """The lexical range of ``function``'s members of the waiting set."""
    return f"[{function}\0", f"({function}\1"


def _digest(raw_input: Any, priority: int | None, webhook: str | None) -> str:
    body = json.dumps(
        {"input": raw_input, "priority": priority, "webhook": webhook}, sort_keys=True
    )
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _finished(payload: str) -> InvocationRecord:
    """A message on the events channel: ``<id> <record as JSON>`` of one that finished."""
    invocation_id, _, record = payload.partition(" ")
    return InvocationRecord.from_hash(invocation_id, json.loads(record))
