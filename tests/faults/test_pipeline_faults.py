"""A pipeline run's 202 is a promise: a worker killed mid-step, Redis restarted mid-run and
the API killed mid-run each end with the run finished and every step's invocation run once
(an attempt whose worker died is redelivered and runs again, as for single invocations).

Each test prints its figures; timings are reported, never asserted.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Stack, wait_for, write_function

pytestmark = pytest.mark.faults

WORK = """
import time
from conveyor import context

def run(x: dict) -> dict:
    with open({runs!r}, "a") as f:
        f.write(context.current().id + "\\n")
    time.sleep(x.get("sleep", 0))
    return {{"v": x["v"] + 1, "sleep": x.get("sleep", 0)}}
"""

FLOW = """
[pipeline]
output = "$.steps.last.output"

[[steps]]
name = "first"
function = "work"
input = "$.input.start"

[[steps]]
name = "fan"
function = "work"
for_each = "$.input.items"

[[steps]]
name = "last"
function = "work"
input = { v = "$.steps.first.output.v", sleep = "$.input.start.sleep" }
"""


def deploy(stack: Stack) -> Path:
    runs = stack.root / "runs"
    write_function(
        stack.functions,
        "work",
        WORK.format(runs=str(runs)),
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 20\n',
    )
    folder = stack.functions / "flow"
    folder.mkdir()
    (folder / "function.toml").write_text(FLOW)
    return runs


def ran(runs: Path) -> Counter[str]:
    return Counter(runs.read_text().split()) if runs.exists() else Counter()


def payload(items: int, sleep: float) -> dict[str, Any]:
    return {
        "start": {"v": 0, "sleep": sleep},
        "items": [{"v": i, "sleep": sleep} for i in range(items)],
    }


def start(base: str, body: dict[str, Any]) -> str:
    answer = httpx.post(f"{base}/functions/flow/invoke", json={"input": body}, timeout=30)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def finished(base: str, run_id: str, stack: Stack, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            body = httpx.get(
                f"{base}/functions/flow/results/{run_id}", params={"wait": 5}, timeout=30
            ).json()
        except httpx.HTTPError:
            continue
        if body.get("finished_at"):
            return body
    logs = "".join(
        f"\n--- {w.log.name}:\n" + "\n".join(w.log.read_text(errors="replace").splitlines()[-30:])
        for w in stack.workers
    )
    raise AssertionError(f"run {run_id} did not finish: {body}{logs}")


def check_once(
    report: Callable[[str], None], name: str, stack: Stack, done: dict[str, Any], runs: Path
) -> None:
    """The run succeeded, every step's invocation ran, and one that ran twice was an
    attempt redelivered after its worker died: a step's invocation counts its attempts; a
    for_each element runs in a chunk of the step's map job, and only the chunks a dead
    worker held (or whose outcome Redis lost as it went down) run again: at most two pool
    processes' chunks, each about [map] chunk_seconds (0.05 s) of items."""
    assert done["status"] == "succeeded", done
    assert done["output"] == {"v": 2, "sleep": done["output"]["sleep"]}
    ids = [i for step in done["steps"] for i in step["invocations"]]
    counts = ran(runs)
    assert set(counts) == set(ids), set(ids) ^ set(counts)
    twice = [i for i in ids if counts[i] > 1]
    client = stack.redis
    chunked = [i for i in twice if not client.exists(f"conveyor:job:{i}")]
    assert len(chunked) <= 2 * 8, chunked
    for invocation in set(twice) - set(chunked):
        assert int(client.hget(f"conveyor:job:{invocation}", "attempts") or 0) >= 2, invocation
    fan = done["steps"][1]
    assert fan["status"] == "succeeded" and len(fan["invocations"]) == len(ids) - 2
    report(
        f"{name}: {len(ids)} step invocations, all succeeded, {len(twice)} ran again"
        " (redelivered attempts)"
    )


def test_a_worker_killed_mid_step(make_stack, apis, report) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.set_worker(visibility_timeout=3, restore_interval=0.5)
    runs = deploy(stack)
    doomed = stack.worker("--queues", "default", "--concurrency", "2")
    stack.worker("--queues", "default", "--concurrency", "2")
    _, base = apis(stack)
    run_id = start(base, payload(40, 0.2))
    wait_for(lambda: sum(ran(runs).values()) > 10, 60, "the fan-out to be under way")
    doomed.kill(signal.SIGKILL)
    check_once(report, "worker SIGKILL mid-step", stack, finished(base, run_id, stack), runs)


def test_redis_restarted_mid_run(make_stack, apis, report) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(redis_args=("--appendonly", "yes", "--appendfsync", "everysec"))
    stack.set_worker(visibility_timeout=6, restore_interval=0.5)
    runs = deploy(stack)
    stack.worker("--queues", "default", "--concurrency", "2")
    _, base = apis(stack)
    run_id = start(base, payload(200, 0.02))
    wait_for(lambda: sum(ran(runs).values()) > 40, 60, "the fan-out to be under way")
    stack.server.stop()  # a clean shutdown writes the append-only file out
    time.sleep(2)  # the workers see it gone and start reconnecting
    stack.server.start()
    check_once(report, "Redis restart mid-run", stack, finished(base, run_id, stack), runs)


def test_the_api_killed_mid_run(make_stack, apis, report) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    runs = deploy(stack)
    stack.worker("--queues", "default", "--concurrency", "2")
    proc, base = apis(stack)
    run_id = start(base, payload(6, 0.3))
    proc.kill(signal.SIGKILL)  # right after the 202: the workers carry the run on alone
    wait_for(lambda: sum(ran(runs).values()) >= 8, 60, "every step to run without the API")
    _, base = apis(stack)
    done = finished(base, run_id, stack)
    check_once(report, "API SIGKILL mid-run", stack, done, runs)
    assert max(ran(runs).values()) == 1
