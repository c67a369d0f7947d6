"""``conveyor worker --autoscale MIN,MAX``: a backlog raises the number of worker processes,
an idle queue lowers it again by warm shutdown, and nothing is lost or run twice."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import Process, Stack, invoke, result, wait_for, write_function

pytestmark = pytest.mark.integration
Reporter = Callable[[str], None]

# Each run appends its invocation id to a file: executions are counted, not inferred.
SLOW = """
import os, time

def run(x: dict) -> str:
    time.sleep(x["sleep"])
    with open(x["log"], "a") as f:
        f.write(f"{x['n']} {os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES')}\\n")
    return "ok"
"""

# Batches of two: 30 items make 15 turns of a process, where the queue itself holds one
# drain trigger at a time.
SLOW_BATCHES = """
import os, time

class Slow:
    def predict(self, x: dict) -> str:
        return self.predict_batch([x])[0]

    def predict_batch(self, xs: list[dict]) -> list[str]:
        time.sleep(xs[0]["sleep"] * 2)
        with open(xs[0]["log"], "a") as f:
            for x in xs:
                f.write(f"{x['n']} {os.getpid()} -\\n")
        return ["ok"] * len(xs)
"""


@pytest.fixture(scope="module")
def scaling_stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_worker(scale_interval=0.3, scale_down_after=2.0)
    write_function(stack.functions, "slow", SLOW, '[function]\nhandler = "handler:run"\n')
    write_function(
        stack.functions,
        "slowgpu",
        SLOW,
        '[function]\nhandler = "handler:run"\n[resources]\ngpu = 1\n',
    )
    write_function(
        stack.functions,
        "slowbatch",
        SLOW_BATCHES,
        '[function]\nhandler = "handler:Slow"\n[queue]\nname = "batch"\n'
        "[batching]\nmax_batch_size = 2\nmax_wait_ms = 0\n",
    )
    return stack


def _watch_counts(stack: Stack, sup: Process, until: int, seen: list[int]) -> bool:
    count = len(stack.heartbeats(sup))
    seen.append(count)
    return count == until


def _run_backlog(
    stack: Stack, sup: Process, function: str, *, high: int, low: int, report: Reporter
) -> list[str]:
    log = stack.root / f"{function}.runs"
    seen: list[int] = []
    with stack.api() as api:
        ids = []
        start = time.monotonic()
        for n in range(30):
            status, body = invoke(api, function, {"sleep": 0.3, "log": str(log), "n": n})
            assert status == 202
            ids.append(body["id"])
        wait_for(lambda: _watch_counts(stack, sup, high, seen), 60, f"{high} processes")
        scaled_up = time.monotonic() - start
        done = [result(api, function, i, wait=60) for i in ids]
        drained = time.monotonic() - start
        assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in done)
        wait_for(lambda: _watch_counts(stack, sup, low, seen), 60, f"back to {low}")
        scaled_down = time.monotonic() - start
    assert max(seen) == high  # never above MAX
    runs = log.read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in runs) == list(range(30))  # each once
    report(
        f"30 x 0.3 s accepted; {high} processes heartbeating after {scaled_up:.1f} s, all done"
        f" after {drained:.1f} s (one process alone: 9 s), back to {low} after {scaled_down:.1f} s;"
        f" executed {len(runs)}, lost 0"
    )
    return runs


def test_backlog_scales_up_and_idle_scales_down(scaling_stack: Stack, report: Reporter) -> None:
    sup = scaling_stack.supervisor("--queues", "default", "--autoscale", "1,3", expect=1)
    runs = _run_backlog(scaling_stack, sup, "slow", high=3, low=1, report=report)
    assert len({line.split()[1] for line in runs}) >= 2  # more than one process served
    stopped = wait_for(
        lambda: sum(e.get("event") == "worker_process_stopped" for e in sup.events()) == 2,
        15,
        "two processes to exit",
    )
    assert stopped
    events = [e.get("event") for e in sup.events()]
    assert events.count("autoscale_up") == 2 and events.count("autoscale_down") == 2
    assert "worker_process_died" not in events
    sup.stop()


def test_gpu_workers_scale_by_whole_devices(scaling_stack: Stack, report: Reporter) -> None:
    sup = scaling_stack.supervisor(
        "--gpus", "0,1", "--queues", "default", "--autoscale", "1,2", expect=1
    )
    assert [b["device"] for b in scaling_stack.heartbeats(sup)] == ["0"]
    runs = _run_backlog(scaling_stack, sup, "slowgpu", high=2, low=1, report=report)
    assert {line.split()[2] for line in runs} == {"0", "1"}
    assert [b["device"] for b in scaling_stack.heartbeats(sup)] == ["0"]
    sup.stop()


def test_batching_backlog_counts_as_batches(scaling_stack: Stack, report: Reporter) -> None:
    sup = scaling_stack.supervisor("--queues", "batch", "--autoscale", "1,3", expect=1)
    _run_backlog(scaling_stack, sup, "slowbatch", high=3, low=1, report=report)
    sup.stop()


def test_scale_from_zero_and_back(scaling_stack: Stack) -> None:
    sup = scaling_stack.supervisor("--queues", "realtime", "--autoscale", "0,1", expect=0)
    write_function(
        scaling_stack.functions,
        "rare",
        "def run(x: int) -> int:\n    return x + 1\n",
        '[function]\nhandler = "handler:run"\n[queue]\nname = "realtime"\n',
    )
    with scaling_stack.api() as api:
        # No process yet, but the queue is watched: no warning.
        idle = wait_for(
            lambda: api.get("/functions/rare").json().get("autoscaled"), 20, "the autoscaler"
        )
        assert idle
        described = api.get("/functions/rare").json()
        assert described["workers"] == 0 and "warning" not in described
        assert scaling_stack.heartbeats(sup) == []
        status, accepted = invoke(api, "rare", 41)
        assert status == 202 and "warning" not in accepted
        assert result(api, "rare", accepted["id"], wait=60)["output"] == 42
        wait_for(lambda: len(scaling_stack.heartbeats(sup)) == 0, 60, "back to zero")
    sup.stop()
    assert not scaling_stack.redis.keys("conveyor:worker:conveyor-autoscaler-*")


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_supervisor_stops_warm_and_its_workers_do_not_outlive_it(scaling_stack: Stack) -> None:
    log = scaling_stack.root / "warm.runs"
    sup = scaling_stack.supervisor("--queues", "default", "--autoscale", "2,2", expect=2)
    with scaling_stack.api() as api:
        ids = [
            invoke(api, "slow", {"sleep": 1.5, "log": str(log), "n": n})[1]["id"] for n in (0, 1)
        ]
        wait_for(
            lambda: sum(b["active"] for b in scaling_stack.heartbeats(sup)) == 2, 30, "both busy"
        )
        os.kill(sup.pid, signal.SIGTERM)  # the supervisor alone, as a process manager would
        assert sup.proc.wait(60) == 0
        done = [result(api, "slow", i, wait=0) for i in ids]
        assert [(d["status"], d["attempts"]) for d in done] == [("succeeded", 1)] * 2

    orphaned = scaling_stack.supervisor("--queues", "default", "--autoscale", "1,1", expect=1)
    worker_pid = scaling_stack.heartbeats(orphaned)[0]["pid"]
    os.kill(orphaned.pid, signal.SIGKILL)
    wait_for(lambda: not _running(worker_pid), 30, "the worker to follow its supervisor")
