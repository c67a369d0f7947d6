"""A worker survives Redis going away, again and again: Redis restarted 20 times under a
mixed load (single invocations, a batching function, map jobs, streams and a pipeline with
a fan-out), with the default [worker] settings, and every accepted piece of work ends.
Whatever kombu does when its connection drops, a worker whose consumer stops taking work
starts itself afresh (worker/process.py's Watchdog) and what it held is redelivered.

CONVEYOR_REDIS_RESTARTS sets how many restarts (20). Figures are reported, never asserted.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conveyor.broker.app import create_celery
from tests.support import Stack, free_port, start_api, wait_for, write_function, write_pipeline

pytestmark = pytest.mark.faults

RESTARTS = int(os.environ.get("CONVEYOR_REDIS_RESTARTS", "20"))
FN = '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 60\n'
WORK = "import time\n\ndef run(x: int) -> int:\n    time.sleep(0.02)\n    return x\n"
GEN = "import time\n\ndef run(x: int):\n    for i in range(3):\n        time.sleep(0.01)\n        yield x + i\n"
BATCHED = """
class Model:
    def predict_batch(self, xs: list[int]) -> list[int]:
        return [2 * x for x in xs]
"""
FLOW = """
[[steps]]
name = "split"
function = "split"

[[steps]]
name = "fan"
function = "work"
for_each = "$.steps.split.output"

[[steps]]
name = "streams"
function = "gen"
for_each = "$.steps.split.output"
"""
SPLIT = "def run(n: int) -> list[int]:\n    return list(range(n))\n"


def deploy(stack: Stack) -> None:
    write_function(stack.functions, "work", WORK, FN)
    write_function(stack.functions, "gen", GEN, FN)
    write_function(stack.functions, "split", SPLIT, FN)
    write_function(
        stack.functions,
        "batched",
        BATCHED,
        '[function]\nhandler = "handler:Model"\n[batching]\nmax_batch_size = 8\nmax_wait_ms = 20\n',
    )
    write_pipeline(stack.functions, "flow", FLOW)


def submit(client: httpx.Client, i: int) -> list[tuple[str, str]]:
    """One round of every kind of work: (kind, id) of what was accepted."""
    requests = [
        ("single", "/functions/work/invoke", {"input": i}),
        ("batched", "/functions/batched/invoke", {"input": i}),
        ("batched", "/functions/batched/invoke", {"input": i + 1}),
        ("stream", "/functions/gen/invoke", {"input": i}),
        ("pipeline", "/functions/flow/invoke", {"input": 6}),
        ("map", "/functions/work/map", {"inputs": list(range(30))}),
    ]
    accepted = []
    for kind, path, body in requests:
        try:
            answer = client.post(path, json=body)
        except httpx.HTTPError:
            continue  # the API could not answer: nothing was promised
        if answer.status_code == 202:
            accepted.append((kind, answer.json()["id"]))
    return accepted


def ended(client: httpx.Client, kind: str, ident: str, deadline: float) -> dict[str, Any]:
    """The work's end (its result, or its job's status), waiting until ``deadline`` (one
    for all the work, so what never ends is explained within the test's time limit)."""
    function = {"single": "work", "batched": "batched", "stream": "gen", "pipeline": "flow"}
    body: dict[str, Any] = {"id": ident}
    while True:  # once at least, after the deadline too: what it is now
        try:
            if kind == "map":
                body = client.get(f"/functions/work/jobs/{ident}", params={"wait": 10}).json()
            else:
                url = f"/functions/{function[kind]}/results/{ident}"
                body = client.get(url, params={"wait": 10}).json()
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                return body
            time.sleep(0.5)
            continue
        if body.get("finished_at") or body.get("status") == 404 or time.monotonic() > deadline:
            return body


def _explain(stack: Stack, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """What Redis holds of unfinished work: its record, a run's state and its steps'."""
    client = stack.redis
    ident = body.get("id", "")
    found: dict[str, Any] = {"kind": kind, "body": body}
    if kind == "map":
        found["job"] = client.hgetall(f"conveyor:map:{ident}")
    else:
        found["record"] = client.hgetall(f"conveyor:job:{ident}")
        state = client.hgetall(f"conveyor:run:{ident}")
        state.pop("plan", None)
        found["state"] = state
        found["steps"] = {
            key: client.hgetall(key)
            for key in client.scan_iter(f"conveyor:job:{ident}.*")
            if client.hget(key, "status") not in ("succeeded",)
        }
        found["jobs"] = {
            key: client.hgetall(key)
            for key in client.scan_iter(f"conveyor:map:{ident}.*")
            if client.type(key) == "hash"
        }
    found["sent"] = client.hlen("conveyor:sent")
    return found


@pytest.mark.timeout(900)
def test_workers_survive_redis_restarted_again_and_again(
    make_stack, report: Callable[[str], None]
) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack(redis_args=("--appendonly", "yes", "--appendfsync", "everysec"))
    stack.set_worker()  # the defaults: no tuned visibility timeout or restore interval
    deploy(stack)
    for _ in range(2):
        stack.worker("--queues", "default", "--concurrency", "2")
    api, base = start_api(stack.config, stack.root / "api.log", free_port())
    accepted: list[tuple[str, str]] = []
    began = time.monotonic()
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            wait_for(
                lambda: client.get("/functions/flow").json().get("status") == "ready",
                30,
                "the pipeline",
            )
            for round_ in range(RESTARTS):
                accepted += submit(client, round_ * 10)
                time.sleep(0.5)
                stack.server.stop()  # a clean shutdown writes the append-only file out
                time.sleep(0.5)
                stack.server.start()
                wait_for(lambda: client.get("/readyz").status_code == 200, 30, "the API back")
                accepted += submit(client, round_ * 10 + 5)
                time.sleep(1.0)
            deadline = time.monotonic() + 240
            outcomes = [(kind, ended(client, kind, ident, deadline)) for kind, ident in accepted]
    finally:
        api.stop()
    took = time.monotonic() - began
    statuses = Counter((kind, body.get("status")) for kind, body in outcomes)
    unfinished = [(k, b) for k, b in outcomes if not b.get("finished_at")]
    restarted = sum(
        w.log.read_text(errors="replace").count('"worker_restarting"') for w in stack.workers
    )
    report(
        f"{RESTARTS} Redis restarts, {len(accepted)} accepted ({dict(Counter(k for k, _ in accepted))}):"
        f" {dict(statuses)}, unfinished {len(unfinished)}, workers restarted themselves"
        f" {restarted} times, {took:.0f} s"
    )
    failed = [(k, b) for k, b in outcomes if b.get("status") != "succeeded"]
    explained = [_explain(stack, kind, body) for kind, body in failed[:3]]
    print(json.dumps(explained, indent=1, default=str))  # shown in full when it fails
    assert not unfinished, explained
    assert not failed, (statuses, explained)


def test_a_worker_whose_consumer_stops_starts_afresh(
    make_stack, report: Callable[[str], None]
) -> None:  # type: ignore[no-untyped-def]
    """Its consumer told to stop taking from its queue (Celery's own remote control, a
    real fault on the real worker) while work waits: the worker notices, says so in its
    heartbeat, and starts itself afresh as the same process; the work runs."""
    stack: Stack = make_stack()
    stack.set_worker(stall_after=3)
    deploy(stack)
    worker = stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        first = api.post("/functions/work/invoke", json={"input": 1}, params={"wait": 30})
        assert first.status_code == 200, first.text
        [name] = stack.redis.smembers("conveyor:workers")
        app = create_celery(stack.settings())
        app.control.cancel_consumer("default", destination=[name], reply=True, timeout=5)
        stopped = time.monotonic()
        waiting = api.post("/functions/work/invoke", json={"input": 2}).json()
        done = api.get(f"/functions/work/results/{waiting['id']}", params={"wait": 60}).json()
        took = time.monotonic() - stopped
    assert done["status"] == "succeeded", done
    assert worker.proc.poll() is None  # the same process, started afresh
    log = worker.log.read_text(errors="replace")
    assert '"worker_consumer_stalled"' in log and '"worker_restarting"' in log
    report(f"consumer stopped: noticed and the waiting invocation done {took:.1f} s later")
