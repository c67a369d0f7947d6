"""Acknowledged means replicated (``[redis] min_replicas``): Redis's ``WAIT`` after a write.

``WAIT n timeout`` blocks until ``n`` replicas have confirmed every write made *on that
connection*, so it is queued on the pipeline that carries the write (a pooled client could
send a lone WAIT on another connection, which would confirm nothing). It answers how many
replicas confirmed; fewer than ``n`` after ``[redis] replica_timeout`` is a shortfall, and
the caller decides: the API withdraws the submit and answers 503
(:meth:`conveyor.invocations.client.InvocationClient.submit`), a worker logs it and acknowledges
its message (what it wrote stays on the primary; were that lost, the message would be
redelivered, so the invocation runs again rather than vanishing).

WAIT is not consensus: a write confirmed by ``n`` replicas survives the primary's loss when
one of them is promoted (sentinels prefer the most up to date); one it did not confirm may
still reach them later, or be lost with the primary.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio.client
import redis.client

from conveyor.log import get_logger
from conveyor.settings import Settings

log = get_logger(__name__)


def wanted(settings: Settings) -> bool:
    return settings.redis.min_replicas > 0


def _queue_wait(pipe: redis.client.Pipeline | redis.asyncio.client.Pipeline, s: Settings) -> None:
    pipe.execute_command("WAIT", s.redis.min_replicas, round(s.redis.replica_timeout * 1000))


def execute(pipe: redis.client.Pipeline, settings: Settings, what: str) -> list[Any]:
    """Run a worker's ``pipe``, then (with ``min_replicas``) wait for the replicas; a
    shortfall is logged as ``what``. The answers of ``pipe``'s own commands."""
    if not wanted(settings):
        return pipe.execute()
    _queue_wait(pipe, settings)
    *answers, confirmed = pipe.execute()
    if int(confirmed) < settings.redis.min_replicas:
        log.warning(
            "write_not_replicated",
            what=what,
            replicas=int(confirmed),
            min_replicas=settings.redis.min_replicas,
            waited=settings.redis.replica_timeout,
        )
    return answers


async def execute_async(
    pipe: redis.asyncio.client.Pipeline, settings: Settings
) -> tuple[list[Any], int | None]:
    """Run the API's ``pipe`` and, with ``min_replicas``, WAIT after it: (answers of
    ``pipe``'s own commands, replicas that confirmed them; None when none are wanted)."""
    if not wanted(settings):
        return await pipe.execute(), None
    _queue_wait(pipe, settings)
    *answers, confirmed = await pipe.execute()
    return answers, int(confirmed)
