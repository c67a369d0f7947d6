"""Schedules over HTTP, and the loop every API process runs to fire them.

``GET /functions/{name}/schedules`` lists a function's ``[[schedules]]`` with their next
tick and last runs; ``POST /functions/{name}/schedules/{index}/run`` (admin) fires one
now. :func:`fire_forever` looks every :data:`LOOK_EVERY` seconds at what serves: a tick
that is due is submitted with the tick as its Idempotency-Key (so however many processes
submit it, one invocation exists), then recorded as the schedule's last fired tick (only
forward, so a restarted process never fires it again). A tick older than
:data:`MISSED_AFTER` was missed (nothing ran): it is skipped, unless the schedule has
``catch_up``. With ``overlap = "skip"`` a tick whose previous run is unfinished fires
nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from conveyor.api.params import takes
from conveyor.api.services import Platform
from conveyor.api.trainings import start_training, trainable
from conveyor.auth.caller import Caller
from conveyor.errors import ConveyorError, InvocationNotFoundError
from conveyor.functions.manifest import ScheduleSection
from conveyor.functions.registry import FunctionEntry
from conveyor.invocations.records import InvocationRecord, InvocationStatus
from conveyor.log import get_logger
from conveyor.results import result_url
from conveyor.schedules import timing

log = get_logger(__name__)

LOOK_EVERY = 0.2  # seconds between looks for due ticks
MISSED_AFTER = 10.0  # seconds: a tick this old when first seen was missed


def _rule(schedule: ScheduleSection) -> dict[str, Any]:
    rule: dict[str, Any] = (
        {"cron": schedule.cron, "timezone": schedule.timezone}
        if schedule.cron is not None
        else {"every": schedule.every}
    )
    rule |= {"overlap": schedule.overlap, "catch_up": schedule.catch_up}
    return rule | ({"training": True, "promote": schedule.promote} if schedule.training else {})


async def fire(
    platform: Platform, entry: FunctionEntry, schedule: ScheduleSection, key: str | None
) -> InvocationRecord:
    """Submit one run of ``schedule``'s function (a training with ``training``)."""
    assert entry.spec is not None and entry.schemas is not None
    spec, schemas = entry.spec, entry.schemas
    if schedule.training:
        spec, schemas = trainable(platform, entry.name)
        platform.validators.validate_training(spec, schemas, {"input": schedule.input})
        return await start_training(
            platform, spec, schemas, schedule.input, promote=schedule.promote, owner=None, key=key
        )
    platform.validators.validate(spec, schemas, {"input": schedule.input})
    plan = None
    if spec.manifest.is_pipeline:
        census = await platform.invocations.census()
        plan = platform.planner.plan(spec, None, workers=census.pool if census else None)
    return await platform.invocations.submit(spec, schedule.input, idempotency_key=key, plan=plan)


async def _status(platform: Platform, invocation_id: str) -> InvocationStatus | None:
    """A run's invocation's status; None once its result expired."""
    try:
        return (await platform.invocations.get(invocation_id)).status
    except InvocationNotFoundError:
        return None


async def _unfinished(platform: Platform, name: str, index: int) -> bool:
    """Whether the last run fired by ``name``'s schedule ``index`` has not finished."""
    for run in await platform.schedules.runs(name, index):
        if run.id:
            status = await _status(platform, run.id)
            return status is not None and not status.final
    return False


async def _tick(
    platform: Platform, entry: FunctionEntry, index: int, tick: float, now: float
) -> None:
    assert entry.spec is not None
    schedule = entry.spec.manifest.schedules[index]
    name = entry.name
    if now - tick > MISSED_AFTER and not schedule.catch_up:
        await platform.schedules.fired(name, index, tick, "", "missed")
        return
    if schedule.overlap == "skip" and await _unfinished(platform, name, index):
        await platform.schedules.fired(name, index, tick, "", "skipped")
        return
    try:
        invocation_id = (await fire(platform, entry, schedule, f"schedule:{index}:{tick!r}")).id
    except ConveyorError as exc:  # an input its function no longer takes, no version ...
        log.warning("schedule_not_fired", function=name, schedule=index, error=str(exc))
        await platform.schedules.fired(name, index, tick, "", f"failed: {exc}")
        return
    if await platform.schedules.fired(name, index, tick, invocation_id, "fired"):
        log.info("schedule_fired", function=name, schedule=index, invocation_id=invocation_id)


async def look(platform: Platform, now: float) -> None:
    """Fire every tick that is due."""
    due = [
        (entry, index, timing.latest(schedule, now))
        for entry in platform.functions.entries()
        if entry.spec is not None and entry.schemas is not None
        for index, schedule in enumerate(entry.spec.manifest.schedules)
    ]
    if not due:
        return
    lasts = await platform.schedules.lasts([(entry.name, index) for entry, index, _ in due])
    for (entry, index, tick), last in zip(due, lasts, strict=True):
        if last is None or last < tick:
            await _tick(platform, entry, index, tick, now)


async def fire_forever(platform: Platform) -> None:
    """The schedules' loop of one API process (any number may run)."""
    while True:
        await asyncio.sleep(LOOK_EVERY)
        if not platform.loaded:
            continue
        try:
            await look(platform, time.time())
        except ConveyorError as exc:  # Redis away: the next look tries again
            log.warning("schedules_not_looked_at", error=str(exc))


async def schedules_body(
    platform: Platform, name: str, runs: int | None = None
) -> list[dict[str, Any]]:
    """``name``'s schedules: each one's rule, next tick and last ``runs`` runs (all kept)."""
    entry = platform.functions.entry(name)
    schedules = entry.spec.manifest.schedules if entry.spec is not None else []
    now = time.time()
    shown = []
    for index, schedule in enumerate(schedules):
        listed = []
        for run in (await platform.schedules.runs(name, index))[:runs]:
            status = None
            if run.id:
                found = await _status(platform, run.id)
                status = "expired" if found is None else found.value
            listed.append(
                {
                    "tick": None if run.tick is None else timing.iso(run.tick),
                    "id": run.id or None,
                    "outcome": run.outcome,
                    "status": status,
                    "at": timing.iso(run.at),
                }
            )
        shown.append(
            {
                "index": index,
                **_rule(schedule),
                "input": schedule.input,
                "next_at": timing.iso(timing.following(schedule, now)),
                "runs": listed,
            }
        )
    return shown


class SchedulesController(Controller):
    path = "/functions"
    opt = takes()

    @get("/{name:str}/schedules", summary="A function's schedules: next tick and last runs")
    async def list_schedules(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_sees(name)
        return {"function": name, "schedules": await schedules_body(platform, name)}

    @post(
        "/{name:str}/schedules/{index:int}/run",
        summary="Fire a schedule now (admin)",
        status_code=202,
    )
    async def run_now(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        index: FromPath[int],
    ) -> dict[str, Any]:
        caller.require_admin()
        entry = platform.functions.serving(name)
        assert entry.spec is not None
        schedules = entry.spec.manifest.schedules
        if not 0 <= index < len(schedules):
            raise NotFoundException(f"{name!r} has {len(schedules)} schedule(s); no {index}")
        record = await fire(platform, entry, schedules[index], None)
        await platform.schedules.fired(name, index, None, record.id, "manual")
        return {"id": record.id, "result_url": result_url(record)}
