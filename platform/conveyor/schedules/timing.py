"""When a schedule ticks: the latest tick due, and the next one."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from conveyor.functions.manifest import ScheduleSection, every_seconds


def latest(schedule: ScheduleSection, now: float) -> float:
    """The latest tick at or before ``now`` (a Unix time)."""
    if schedule.every is not None:
        period = every_seconds(schedule.every)
        return math.floor(now / period) * period
    assert schedule.cron is not None
    at = datetime.fromtimestamp(now, ZoneInfo(schedule.timezone))
    after: datetime = croniter(schedule.cron, at).get_prev(datetime)
    following_it: datetime = croniter(schedule.cron, after).get_next(datetime)
    return following_it.timestamp() if following_it.timestamp() <= now else after.timestamp()


def following(schedule: ScheduleSection, now: float) -> float:
    """The first tick after ``now``."""
    if schedule.every is not None:
        period = every_seconds(schedule.every)
        return (math.floor(now / period) + 1) * period
    assert schedule.cron is not None
    at = datetime.fromtimestamp(now, ZoneInfo(schedule.timezone))
    nxt: datetime = croniter(schedule.cron, at).get_next(datetime)
    return nxt.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
