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
import re
import time
from datetime import datetime
from typing import Any

from litestar import Request

from conveyor.api.operations import DURATION_PATTERN
from conveyor.api.services import Platform
from conveyor.errors import (
    ConveyorError,
    InvocationFinishedError,
    InvocationNotFoundError,
    ValidationError,
)
from conveyor.invocations.records import InvocationStatus
from conveyor.log import get_logger

log = get_logger(__name__)

LOOK_EVERY = 0.25  # seconds between looks for deadlines that have come
_DURATION = re.compile(DURATION_PATTERN)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``30``, ``30s``, ``5m``, ``1.5h`` in seconds (ValueError: what it may be)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write seconds (30, 30s), minutes (5m) or hours (1h)"
        )
    return float(match.group(1)) * _UNIT[match.group(2) or "s"]


def request_deadline(request: Request[Any, Any, Any], body: Any) -> float | None:
    """When the request gives up: now plus its ``Cancel-After`` header, or its body's
    ``deadline`` (RFC 3339); the earlier of both. One already passed is taken as given:
    the invocation expires at once. A 422 names what is malformed."""
    found = []
    header = request.headers.get("cancel-after")
    if header is not None:
        try:
            seconds = parse_duration(header)
        except ValueError as exc:
            raise _invalid("Cancel-After", str(exc)) from None
        found.append(time.time() + seconds)
    given = body.get("deadline") if isinstance(body, dict) else None
    if given is not None:
        try:
            when = datetime.fromisoformat(str(given))
        except ValueError:
            raise _invalid("deadline", f"{given!r} is not an RFC 3339 date-time") from None
        found.append(when.timestamp())
    return min(found) if found else None


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(
        f"{field}: {message}", [{"field": field, "message": message, "type": "Deadline"}]
    )


async def end_due(platform: Platform) -> int:
    """End every invocation whose deadline has come: how many."""
    ended = 0
    for invocation_id in await platform.invocations.due_deadlines():
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
    lease ran out, and Redis's memory against its cap for new work."""
    while True:
        await asyncio.sleep(LOOK_EVERY)
        try:
            await end_due(platform)
            await unpark(platform)
            await platform.invocations.check_memory()
        except ConveyorError as exc:  # Redis away: the next look tries again
            log.warning("limits_not_looked_at", error=str(exc))
