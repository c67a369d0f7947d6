"""When a schedule ticks, and what a manifest may say of it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.errors import ManifestError
from conveyor.functions.manifest import ScheduleSection, parse_manifest
from conveyor.schedules.timing import following, latest
from conveyor.settings import QueueSettings


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_every_ticks_on_multiples_of_its_period() -> None:
    every = ScheduleSection(every="30s")
    assert latest(every, 100.0) == 90.0 and following(every, 100.0) == 120.0
    assert latest(every, 120.0) == 120.0  # a tick is due at its own second
    assert latest(ScheduleSection(every="1.5m"), 200.0) == 180.0


def test_cron_ticks_in_its_time_zone() -> None:
    paris = ScheduleSection(cron="0 3 * * *", timezone="Europe/Paris")
    now = ts("2026-12-04T10:00:00+00:00")
    assert latest(paris, now) == ts("2026-12-04T02:00:00+00:00")  # 03:00 in Paris (UTC+1)
    assert following(paris, now) == ts("2026-12-05T02:00:00+00:00")
    exact = ts("2026-12-05T02:00:00+00:00")
    assert latest(paris, exact) == exact
    utc = ScheduleSection(cron="*/15 * * * *")
    assert datetime.fromtimestamp(latest(utc, now + 59), UTC).minute == 0


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ('cron = "61 * * * *"', r"\[\[schedules\]\] #1 cron: '61 \* \* \* \*' is not a cron"),
        ('cron = "every day"', r"#1 cron: 'every day' is not a cron expression"),
        ('every = "5x"', r"#1 every: '5x' is not a period"),
        ('every = "500ms"', r"#1 every: '500ms': a schedule fires at most once a second"),
        ('every = "1m"\ncron = "* * * * *"', r"\[\[schedules\]\] #1: give either cron or every"),
        ("input = 1", r"\[\[schedules\]\] #1: give either cron or every"),
        ('every = "1m"\ntimezone = "Mars/Olympus"', r"#1 timezone: 'Mars/Olympus' is not a time"),
        ('every = "1m"\noverlap = "queue"', r"#1 overlap: Input should be 'skip' or 'allow'"),
        ('every = "1m"\nwhen = "now"', r"#1 when: unknown key"),
    ],
)
def test_schedule_errors_name_the_key(tmp_path: Path, schedule: str, expected: str) -> None:
    path = tmp_path / "function.toml"
    path.write_text(f'[function]\nhandler = "h:run"\n[[schedules]]\n{schedule}\n')
    with pytest.raises(ManifestError, match=expected):
        parse_manifest(path, {"default": QueueSettings()})
