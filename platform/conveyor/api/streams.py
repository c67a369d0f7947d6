"""``GET /functions/{name}/results/{id}/stream``: a streaming invocation's events as
Server-Sent Events, from its 202 until its result expires.

Events are read from the invocation's stream (:class:`~conveyor.streams.db.StreamReader`),
after the number a client last saw (``Last-Event-ID``, or ``?after=N``) so a reconnecting
client misses and repeats nothing; new ones arrive on the process's one subscription. An
output's file references become URLs, and the last event, ``done``, carries the result as
``GET .../results/{id}`` answers it. A reader that goes away cancels nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import FromPath
from litestar.response import Stream

from conveyor.api.controllers import RESULT, readable, run_steps
from conveyor.api.files import base_url
from conveyor.api.params import takes
from conveyor.api.services import Platform
from conveyor.auth.caller import Caller
from conveyor.errors import BrokerUnavailableError, InvocationNotFoundError, NotStreamingError
from conveyor.files import refs
from conveyor.integers import whole_number
from conveyor.invocations.records import InvocationRecord
from conveyor.log import get_logger
from conveyor.results import result_body, with_urls
from conveyor.streams.events import KEEP_ALIVE, EventKind, sse

log = get_logger(__name__)

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: do not buffer


class StreamsController(Controller):
    path = "/functions"
    opt = takes()

    @get(
        RESULT + "/stream",
        summary="Follow a streaming invocation's events (Server-Sent Events)",
        opt=takes("after"),
    )
    async def stream(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
        invocation_id: FromPath[str],
    ) -> Stream:
        record = await readable(platform, caller, name, invocation_id)
        if not record.streaming:
            raise NotStreamingError(
                f"invocation {invocation_id} has no stream: {name!r} returns its output whole"
                f" (a generator handler streams); GET /functions/{name}/results/{invocation_id}"
            )
        after = last_event_id(request)
        events = platform.open_responses.hold(
            caller.owner, _events(platform, base_url(platform, request), name, invocation_id, after)
        )
        return Stream(events, media_type="text/event-stream", headers=HEADERS)


def last_event_id(request: Request[Any, Any, Any]) -> int:
    """The number of the last event the client has: ``Last-Event-ID`` or ``?after``."""
    given = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    after = whole_number(given)
    if after is None:
        raise ClientException(
            f"Last-Event-ID (or ?after) is the number of the last event received; got {given!r}"
        )
    return after


async def _events(
    platform: Platform, base: str, name: str, invocation_id: str, after: int
) -> AsyncIterator[bytes]:
    heartbeat = platform.settings.api.stream_heartbeat
    try:
        async for event in platform.streams.follow(invocation_id, after, heartbeat):
            if event is None:
                if await _record(platform, invocation_id, name) is None:
                    return  # expired or deleted: nothing more will come
                yield KEEP_ALIVE
            elif event.kind == EventKind.DONE:
                record = await _record(platform, invocation_id, name)
                # the result as the result endpoint answers it; deleted meanwhile: its status
                if record is None:
                    done = event.data
                else:
                    steps = await run_steps(platform, record)
                    done = json.dumps(result_body(record, base=base, steps=steps))
                yield sse(event, done)
            elif event.kind == EventKind.OUTPUT and refs.REF in event.data:
                yield sse(event, json.dumps(with_urls(event.value(), None, base)))
            else:
                yield sse(event)
    except BrokerUnavailableError as exc:
        # The response ends; the client comes back with Last-Event-ID and misses nothing.
        log.warning("stream_interrupted", invocation_id=invocation_id, error=str(exc))


async def _record(platform: Platform, invocation_id: str, name: str) -> InvocationRecord | None:
    """The invocation's record; None once it has expired or been deleted."""
    try:
        return await platform.invocations.get(invocation_id, function=name)
    except InvocationNotFoundError:
        return None
