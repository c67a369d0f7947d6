"""A worker that vanishes (SIGKILL of its whole process group, as a lost machine) has its
work run again elsewhere within 30 s with the default settings: an invocation (resuming
from its last checkpoint), a batch's items, a map job's chunk and a training. Nothing here
tunes ``[worker] visibility_timeout`` or ``restore_interval``. Timings are reported, never
asserted."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import Stack, invoke, result, wait_for, write_function

pytestmark = pytest.mark.faults

# Each start writes "<kind> <attempt or pid> <time>"; every piece of work takes seconds.
MARK = """
import os, time
from conveyor import context

def mark(kind):
    with open({log!r}, "a") as f:
        f.write(f"{{kind}} {{os.getpid()}} {{time.time()}}\\n")
"""
STEPS = (
    MARK
    + """
import json

def run(x: dict) -> dict:
    ctx = context.current()
    mark("single")
    state = ctx.checkpoint_dir / "state.json"
    start = json.loads(state.read_text())["step"] + 1 if ctx.resumed else 0
    for step in range(start, 40):
        time.sleep(0.1)
        if step % 5 == 4:
            state.write_text(json.dumps({{"step": step}}))
            ctx.checkpoint()
    return {{"resumed_from": start}}
"""
)
BATCHED = (
    MARK
    + """
class Model:
    def predict_batch(self, xs: list[int]) -> list[int]:
        mark("batch")
        time.sleep(4)
        return [2 * x for x in xs]
"""
)
MAPPED = MARK + '\ndef run(x: int) -> int:\n    mark("map")\n    time.sleep(0.4)\n    return x\n'
HANDLER = "def run(x: float) -> float:\n    return x\n"
TRAIN = (
    MARK
    + """
def train(x: dict) -> dict:
    mark("train")
    time.sleep(4)
    (context.current().output_dir / "trained.txt").write_text("yes")
    return {{"ok": 1}}
"""
)
FN = '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 120\n'


def deploy(stack: Stack) -> Path:
    log = stack.root / "starts.log"
    write_function(stack.functions, "steps", STEPS.format(log=str(log)), FN)
    write_function(
        stack.functions,
        "batched",
        BATCHED.format(log=str(log)),
        '[function]\nhandler = "handler:Model"\n[batching]\nmax_batch_size = 4\nmax_wait_ms = 200\n',
    )
    write_function(stack.functions, "mapped", MAPPED.format(log=str(log)), FN)
    folder = write_function(
        stack.functions, "trained", HANDLER, FN + '[training]\nhandler = "train:train"\n'
    )
    (folder / "train.py").write_text(TRAIN.format(log=str(log)))
    return log


def starts(log: Path) -> list[tuple[str, int, float]]:
    if not log.exists():
        return []
    return [
        (k, int(p), float(t)) for k, p, t in (line.split() for line in log.read_text().splitlines())
    ]


def test_a_vanished_workers_work_runs_again_with_the_defaults(
    make_stack, report: Callable[[str], None]
) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_worker()  # the defaults: the test harness's quick restore_interval removed
    log = deploy(stack)
    doomed = stack.worker("--queues", "default", "--concurrency", "6")
    with stack.api() as api:
        _, single = invoke(api, "steps", {})
        batch = [invoke(api, "batched", i)[1]["id"] for i in range(3)]
        job = api.post("/functions/mapped/map", json={"inputs": list(range(30))}).json()
        training = api.post("/functions/trained/trainings", json={"input": {}}).json()
        kinds = ("single", "batch", "map", "train")
        wait_for(lambda: {k for k, _, _ in starts(log)} >= set(kinds), 60, "every kind under way")
        time.sleep(1.2)  # the single invocation checkpointed
        doomed.kill(signal.SIGKILL)
        killed = time.time()
        held = {p for _, p, _ in starts(log)}
        stack.worker("--queues", "default", "--concurrency", "6")
        done = result(api, "steps", single["id"], wait=60)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2 and done["output"]["resumed_from"] > 0, done
        for invocation_id in batch:
            item = result(api, "batched", invocation_id, wait=60)
            assert item["status"] == "succeeded" and item["output"] in (0, 2, 4), item
        wait_for(
            lambda: api.get(job["status_url"]).json()["status"] == "succeeded", 60, "the map job"
        )
        trained = api.get(
            f"/functions/trained/trainings/{training['id']}", params={"wait": 60}
        ).json()
        assert trained["status"] == "succeeded", trained
    again = {}
    for kind, pid, at in starts(log):
        if at > killed and pid not in held and kind not in again:
            again[kind] = at - killed
    assert set(again) == set(kinds), again
    report(
        "SIGKILLed worker, default [worker] settings: started again after "
        + ", ".join(f"{kind} {again[kind]:.1f} s" for kind in kinds)
    )
