"""Checkpoints survive a lost worker; a warm shutdown gives a running handler its grace.

Real workers on a real Redis: a worker SIGKILLed mid-run costs the work since its last
checkpoint (the next attempt, on another worker, resumes from it), and a worker told to
stop (SIGTERM) lets its handler checkpoint (``ctx.stopping``) before the invocation is
queued again. Timings are reported, never asserted.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support import Stack, invoke, result, wait_for, write_function

pytestmark = pytest.mark.faults

STEPS = """
    import json, time
    from conveyor import context

    def run(x: dict) -> dict:
        ctx = context.current()
        state = ctx.checkpoint_dir / "state.json"
        start = json.loads(state.read_text())["step"] + 1 if ctx.resumed else 0
        for step in range(start, x["steps"]):
            time.sleep(x["pause"])
            with open({log!r}, "a") as f:
                f.write(f"{{ctx.attempt}} {{step}} {{time.time()}}\\n")
            every = x.get("every", 0)
            if (every and (step + 1) % every == 0) or (x.get("on_stop") and ctx.stopping):
                state.write_text(json.dumps({{"step": step}}))
                with open({log!r}, "a") as f:  # (while stopping, checkpoint() ends the attempt)
                    f.write(f"{{ctx.attempt}} saved {{step}} {{time.time()}}\\n")
                ctx.checkpoint()
        return {{"resumed_from": start, "attempt": ctx.attempt, "resumed": ctx.resumed}}
"""


def deploy_steps(stack: Stack) -> Path:
    log = stack.root / "steps.log"
    write_function(
        stack.functions,
        "steps",
        STEPS.format(log=str(log)),
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 60\n',
    )
    return log


def entries(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def test_a_sigkilled_worker_costs_the_work_since_the_last_checkpoint(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_worker(visibility_timeout=3, restore_interval=0.5)
    log = deploy_steps(stack)
    doomed = stack.worker("--queues", "default")
    with stack.api() as api:
        _, accepted = invoke(api, "steps", {"steps": 40, "pause": 0.1, "every": 5})
        begun = time.time()
        wait_for(
            lambda: sum(1 for e in entries(log) if e[1] == "saved") >= 3, 30, "three checkpoints"
        )
        time.sleep(0.25)  # mid-way between two checkpoints
        doomed.kill(signal.SIGKILL)  # the parent and its pool child, as a lost machine
        killed = time.time()
        stack.worker("--queues", "default")
        done = result(api, "steps", accepted["id"], wait=60)
    assert done["status"] == "succeeded", done
    saved = [e for e in entries(log) if e[0] == "1" and e[1] == "saved"]
    last_step, last_saved_at = int(saved[-1][2]), float(saved[-1][3])
    assert done["attempts"] == 2 and done["output"]["resumed"] is True, done
    assert done["output"]["resumed_from"] == last_step + 1, (done, saved[-1])
    assert done["checkpoint"]["attempt"] == 2  # the second attempt checkpointed on
    rerun = [int(e[1]) for e in entries(log) if e[0] == "2" and e[1] != "saved"]
    assert rerun[0] == last_step + 1 and rerun[-1] == 39
    lost = killed - last_saved_at
    report(
        f"SIGKILL mid-run: work lost {lost:.2f} s (since the last checkpoint) instead of"
        f" {killed - begun:.2f} s (since the start); steps redone"
        f" {sum(1 for e in entries(log) if e[0] == '1' and e[1] != 'saved' and int(e[1]) > last_step)}"
    )


def test_sigterm_gives_the_handler_its_grace_to_checkpoint(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_worker(shutdown_grace=3)
    log = deploy_steps(stack)
    leaving = stack.worker("--queues", "default", "--concurrency", "2")
    with stack.api() as api:
        # one checkpoints when told the worker stops; the other never does, and is stopped
        # at the end of the grace
        _, careful = invoke(api, "steps", {"steps": 60, "pause": 0.1, "on_stop": True})
        _, careless = invoke(api, "steps", {"steps": 200, "pause": 0.1})
        wait_for(lambda: len(entries(log)) >= 20, 30, "both under way")
        leaving.proc.send_signal(signal.SIGTERM)  # to the parent, as `kill <pid>` does
        told = time.time()
        leaving.proc.wait(30)
        gone = time.time() - told
        stack.worker("--queues", "default", "--concurrency", "2")
        first = result(api, "steps", careful["id"], wait=60)
        second = result(api, "steps", careless["id"], wait=60)
    saved = [e for e in entries(log) if e[0] == "1" and e[1] == "saved"]
    assert len(saved) == 1, saved  # only the careful one, once, in the grace
    assert float(saved[0][3]) >= told
    assert first["status"] == "succeeded" and first["attempts"] == 2, first
    assert first["output"] == {"resumed_from": int(saved[0][2]) + 1, "attempt": 2, "resumed": True}
    assert second["status"] == "succeeded" and second["attempts"] == 2, second
    assert second["output"]["resumed"] is False  # it saved nothing: it started again
    report(
        f"SIGTERM: the worker left {gone:.2f} s later ([worker] shutdown_grace 3 s); the"
        f" handler that checkpointed in the grace resumed at step {int(saved[0][2]) + 1}"
    )
