"""Schedules fire each tick once, however many API processes run them: real `conveyor
api` processes, a real worker, the ticks counted by what ran. Timings are reported, never
asserted; the counts are exact (a tick is the invocation's Idempotency-Key, and a tick
once recorded is never fired again)."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support import Stack, free_port, start_api, wait_for, write_function

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("CONVEYOR_SCHEDULE_SECONDS", "8"))

RECORD = """
import time
from conveyor import context

def run(x: dict) -> int:
    with open({runs!r}, "a") as f:
        f.write(f"{{context.current().id}} {{time.time()}}\\n")
    time.sleep(x.get("sleep", 0))
    return 1
"""


def deploy(stack: Stack, name: str, schedule: str, sleep: float = 0) -> Path:
    runs = stack.root / f"{name}.runs"
    manifest = (
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 20\n'
        f"[[schedules]]\n{schedule}\ninput = {{ sleep = {sleep} }}\n"
    )
    write_function(stack.functions, name, RECORD.format(runs=str(runs)), manifest)
    return runs


def lines(runs: Path) -> list[tuple[str, float]]:
    if not runs.exists():
        return []
    return [(i, float(t)) for i, t in (line.split() for line in runs.read_text().splitlines())]


def test_each_tick_fires_once_with_three_api_processes(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    runs = deploy(stack, "tick", 'every = "1s"')
    stack.worker("--queues", "default", "--concurrency", "2")
    apis = [start_api(stack.config, stack.root / f"api-{i}.log", free_port()) for i in range(3)]
    try:
        base = apis[0][1]
        wait_for(lambda: lines(runs), 30, "a first tick")
        start = time.time()
        time.sleep(SECONDS)
        apis[1][0].kill(signal.SIGKILL)  # one goes: the others go on, each tick once
        time.sleep(SECONDS / 2)
        end = time.time()
        time.sleep(2)  # the last ticks' invocations finish
        ran = lines(runs)
        ids = Counter(i for i, _ in ran)
        window = [t for _, t in ran if start + 1 <= t <= end - 1]
        expected = (end - 1) - (start + 1)
        listed = httpx.get(f"{base}/functions/tick/schedules", timeout=10).json()
        [schedule] = listed["schedules"]
        ticks = Counter(run["tick"] for run in schedule["runs"])
        report(
            f"every 1s, 3 API processes ({SECONDS + SECONDS / 2:.0f} s, one SIGKILLed after"
            f" {SECONDS:.0f} s): {len(window)} ticks fired in {expected:.1f} s, duplicates"
            f" {sum(n - 1 for n in ids.values() if n > 1)}"
        )
        assert all(n == 1 for n in ids.values()), ids.most_common(3)
        assert all(n == 1 for n in ticks.values()), ticks.most_common(3)
        assert abs(len(window) - expected) <= 1.5, (len(window), expected)
        assert schedule["every"] == "1s" and schedule["next_at"] > schedule["runs"][0]["tick"]
        assert {run["outcome"] for run in schedule["runs"]} <= {"fired"}
    finally:
        for proc, _ in apis:
            proc.stop()


def test_overlap_skip_waits_for_the_previous_run(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    runs = deploy(stack, "slow", 'every = "1s"', sleep=2.5)
    stack.worker("--queues", "default", "--concurrency", "4")
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    try:
        wait_for(lambda: len(lines(runs)) >= 3, 30, "three runs")
        starts = sorted(t for _, t in lines(runs))
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        listed = httpx.get(f"{base}/functions/slow/schedules", timeout=10).json()
        outcomes = Counter(run["outcome"] for run in listed["schedules"][0]["runs"])
        report(
            f"overlap skip, a 2.5 s run every 1 s: starts {[round(g, 1) for g in gaps]} s apart, {dict(outcomes)}"
        )
        assert min(gaps) >= 2.4, gaps  # never two at once
        assert outcomes["skipped"] >= 2 and outcomes["fired"] >= 3
        fired = httpx.post(f"{base}/functions/slow/schedules/0/run", timeout=10)
        assert fired.status_code == 202, fired.text
        assert fired.json()["id"] in {i for i, _ in lines(runs)} or wait_for(
            lambda: fired.json()["id"] in {i for i, _ in lines(runs)}, 10, "the manual run"
        )
    finally:
        proc.stop()


def test_schedule_errors_are_reported_at_deploy(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    write_function(
        stack.functions, "badcron", "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n[[schedules]]\ncron = "0 25 * * *"\ninput = 1\n',
    )  # fmt: skip
    write_function(
        stack.functions, "badinput", "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n[[schedules]]\nevery = "1h"\ninput = "one"\n',
    )  # fmt: skip
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    try:

        def error(name: str) -> str:
            return str(httpx.get(f"{base}/functions/{name}", timeout=10).json().get("error"))

        wait_for(lambda: error("badcron") != "None" and error("badinput") != "None", 30)
        assert "function.toml: [[schedules]] #1 cron: '0 25 * * *' is not a cron expression" in (
            error("badcron")
        )
        assert "[[schedules]] #1 input: \"one\" is not an input of 'badinput'" in error("badinput")
    finally:
        proc.stop()
