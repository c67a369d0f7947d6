"""Limits the API keeps: a request's ``Cancel-After`` (or its body's ``deadline``) and
``[limits] max_queue_time``, and the loop every API process runs to end what is past its
deadline and to give back the ``[limits] concurrency`` slots of workers that vanished.

An invocation that has not started by its deadline ends ``expired`` (never run: a worker
that takes it later drops it, ``start.lua``); one still running at its request's deadline is
cancelled, as ``POST .../cancel`` does. The deadlines are one sorted set in Redis
(``invocations/lua/deadline.lua``), so any number of processes share the work, each end
being one atomic transition.
"""

from __future__ import annotations

import asyncio
import json
import time

from conveyor.api.jobs import end_job
from conveyor.api.services import Platform
from conveyor.errors import (
    ConveyorError,
    InvocationFinishedError,
    InvocationNotFoundError,
)
from conveyor.invocations.records import UNPARK_EVERY, InvocationStatus
from conveyor.log import get_logger

log = get_logger(__name__)

LOOK_EVERY = UNPARK_EVERY  # seconds between looks for deadlines, slots and turns that came
FORGET_EVERY = 60.0  # seconds between looks for waiting ids whose records are gone


async def end_due(platform: Platform) -> int:
    """End every invocation whose deadline has come: how many."""
    ended = 0
    for invocation_id in await platform.invocations.due_deadlines():
        if invocation_id.startswith("map "):
            ended += await _end_job(platform, invocation_id)
            continue
        try:
            record = await platform.invocations.get(invocation_id)
        except InvocationNotFoundError:
            await platform.invocations.forget_deadline(invocation_id)
            continue
        if record.status in (InvocationStatus.QUEUED, InvocationStatus.RETRYING):
            error = {"type": "Expired", "message": "not started by its deadline: it never ran"}
            ended += await platform.invocations.end(
                invocation_id,
                InvocationStatus.EXPIRED,
                (InvocationStatus.QUEUED, InvocationStatus.RETRYING),
                error=json.dumps(error),
            )
        elif record.status is InvocationStatus.RUNNING:
            try:
                await platform.invocations.cancel(
                    invocation_id, reason="cancelled at its deadline (Cancel-After)"
                )
                ended += 1
            except InvocationFinishedError:
                pass  # it ended meanwhile
        else:
            await platform.invocations.forget_deadline(invocation_id)
    if ended:
        log.info("deadlines_ended", invocations=ended)
    return ended


async def _end_job(platform: Platform, member: str) -> int:
    """A map job whose deadline came: what it has not run yet is expired."""
    _, function, job_id = member.split(" ")
    try:
        job = await platform.maps.get(job_id, function)
        if job.status == "running":
            await end_job(platform, job, "expired")
    except (InvocationNotFoundError, InvocationFinishedError):
        pass  # gone, or ended meanwhile
    await platform.invocations.forget_deadline(member)
    return 1


async def unpark(platform: Platform) -> int:
    """Give back the slots of workers that vanished ([limits] concurrency): the parked
    invocations they free go back to their queues, as do those whose turn came ([limits]
    rate). How many moved."""
    moved = 0
    for entry in platform.functions.entries():
        if entry.spec is None:
            continue
        limits = entry.spec.manifest.limits
        if limits.concurrency is not None or limits.rate is not None:
            rated = limits.rate is not None
            moved += await platform.invocations.unpark(entry.name, limits.concurrency, rated)
    if moved:
        log.info("invocations_unparked", invocations=moved)
    return moved


async def limits_forever(platform: Platform) -> None:
    """The limits' loop of one API process (any number may run): deadlines, slots whose
    lease ran out, and Redis's memory against its cap for new work; every minute (the
    first look too), the ids counted as waiting whose records are gone."""
    forgot = -FORGET_EVERY
    while True:
        await asyncio.sleep(LOOK_EVERY)
        try:
            await end_due(platform)
            await unpark(platform)
            await platform.invocations.check_memory()
            if time.monotonic() - forgot >= FORGET_EVERY:
                forgot = time.monotonic()
                await platform.invocations.forget_gone()
        except ConveyorError as exc:  # Redis away: the next look tries again
            log.warning("limits_not_looked_at", error=str(exc))
