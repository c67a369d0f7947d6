"""A message lost between kombu's BRPOP and its unacked record is queued again (a
submit's, and a retry's).

A consumer SIGKILLed between the two commands (or a primary Redis that replicated only
the first) leaves the invocation queued with its message nowhere. The test makes that
state exactly as kombu would leave it -- the message popped off its list, no unacked
entry -- before any worker runs, then starts a worker: its sweep finds the message gone
twice, pushes the kept copy again, and the invocation runs once."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.support import cancel, invoke, result, wait_for, write_function, write_recording_function

pytestmark = pytest.mark.faults


def test_lost_message_is_queued_again(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    runs = stack.root / "runs"
    write_recording_function(stack.functions, "work", runs, "[queue]\npriority = 1\n")
    client = stack.redis
    with stack.api() as api:
        ids = [invoke(api, "work", x)[1]["id"] for x in range(3)]
        lost, cancelled, waiting = ids
        [queue_list] = [k for k in client.keys("default*") if client.llen(k)]
        # Two consumers took the oldest two messages and died before recording them.
        for expected in (lost, cancelled):
            taken = client.rpop(queue_list)
            assert expected in taken
        assert cancel(api, "work", cancelled).status_code == 200
        assert client.hlen("conveyor:sent") == 3

        worker = stack.worker("--queues", "default", "--concurrency", "1")
        assert result(api, "work", waiting)["output"] == 2
        assert result(api, "work", lost, wait=60)["output"] == 0
        assert result(api, "work", cancelled)["status"] == "cancelled"
        wait_for(lambda: client.hlen("conveyor:sent") == 0, 30, "the copies dropped")
    ran = Counter(runs.read_text().split())
    assert ran == Counter({lost: 1, waiting: 1}), ran
    log = worker.log.read_text()
    assert "message_lost" in log and lost in log
    assert client.hlen("conveyor:stranded") == 0


FLAKY = """
from conveyor import context

def run(x: int) -> int:
    with open({runs!r}, "a") as f:
        f.write(f"{{context.current().id}}:{{context.current().attempt}}\\n")
    if context.current().attempt == 1:
        raise RuntimeError("first attempts fail")
    return x
"""


def test_a_retrys_lost_message_is_queued_again(make_stack) -> None:  # type: ignore[no-untyped-def]
    """A retry's message is written with the record's change to ``retrying`` and copied as
    a submit's is: a worker killed then, with the message lost between kombu's two
    commands, leaves nothing ``retrying`` forever."""
    stack = make_stack()
    runs = stack.root / "runs"
    manifest = '[function]\nhandler = "handler:run"\n[retries]\nmax = 1\nbackoff = 1.0\non = ["RuntimeError"]\n'
    write_function(stack.functions, "flaky", FLAKY.format(runs=str(runs)), manifest)
    client = stack.redis
    with stack.api() as api:
        worker = stack.worker("--queues", "default", "--concurrency", "1")
        invocation = invoke(api, "flaky", 7)[1]["id"]
        wait_for(lambda: client.hget(f"conveyor:job:{invocation}", "status") == "retrying", 30)
        worker.kill()  # it may hold the retry's message (due in a second) by now
        worker.stop()
        entry = client.hget("conveyor:sent", invocation)
        assert entry is not None and entry.endswith(f" {invocation}.2"), entry  # the retry's copy
        message = client.hget("conveyor:sent-messages", invocation)
        # As kombu leaves it when its consumer dies between BRPOP and the unacked record:
        # the message on no list and not among the unacked.
        for queue_list in client.keys("default*"):
            client.lrem(queue_list, 0, message)
        client.hdel("unacked", f"{invocation}.2")
        client.zrem("unacked_index", f"{invocation}.2")
        assert client.hget(f"conveyor:job:{invocation}", "status") == "retrying"

        rescuer = stack.worker("--queues", "default", "--concurrency", "1")
        done = result(api, "flaky", invocation, wait=60)
        assert done["status"] == "succeeded" and done["output"] == 7 and done["attempts"] == 2
    assert runs.read_text().split() == [f"{invocation}:1", f"{invocation}:2"]
    assert "message_lost" in rescuer.log.read_text()


def test_a_map_chunks_lost_message_is_queued_again(make_stack) -> None:  # type: ignore[no-untyped-def]
    """A chunk's message, fed by the map job, is copied until the chunk begins: popped off
    its list and never recorded (Redis went away between kombu's two commands), the job
    would wait for it for good; the sweep queues it again and the job ends."""
    stack = make_stack()
    runs = stack.root / "runs"
    write_recording_function(stack.functions, "work", runs)
    client = stack.redis
    with stack.api() as api:
        job = api.post("/functions/work/map", json={"inputs": list(range(6))}).json()
        [queue_list] = [k for k in client.keys("default*") if client.llen(k)]
        copies = client.hgetall("conveyor:sent")
        assert copies and all(e.endswith(f"conveyor:map:{job['id']}") for e in copies.values())
        taken = client.rpop(queue_list)  # the first chunk's message, as kombu took it
        assert json.loads(taken)["properties"]["delivery_tag"] in copies
        worker = stack.worker("--queues", "default", "--concurrency", "1")
        wait_for(lambda: api.get(job["status_url"]).json()["status"] == "succeeded", 60, "the job")
        wait_for(lambda: client.hlen("conveyor:sent") == 0, 30, "the copies dropped")
    ran = Counter(runs.read_text().split())
    assert len(ran) == 6 and set(ran.values()) == {1}, ran  # each item once
    assert "message_lost" in worker.log.read_text()


BATCHED = """
class Model:
    def predict_batch(self, xs: list[int]) -> list[int]:
        return [2 * x for x in xs]
"""


def test_batch_items_whose_trigger_is_gone_get_one(make_stack) -> None:  # type: ignore[no-untyped-def]
    """A drain that a Redis restart ended before it re-armed (its task failed, and was
    acked) leaves items on the stream with no trigger coming and no flag set: the state
    made exactly, before any worker runs. A worker's sweep arms a trigger; they run."""
    stack = make_stack()
    write_function(
        stack.functions,
        "batched",
        BATCHED,
        '[function]\nhandler = "handler:Model"\n[batching]\nmax_batch_size = 4\nmax_wait_ms = 10\n',
    )
    client = stack.redis
    with stack.api() as api:
        ids = [invoke(api, "batched", x)[1]["id"] for x in range(6)]
        for key in client.keys("default*"):  # the trigger, gone with its drain
            client.delete(key)
        client.delete("conveyor:batch-armed:batched", "conveyor:sent", "conveyor:sent-messages")
        assert client.xlen("conveyor:batch:batched") == 6
        worker = stack.worker("--queues", "default", "--concurrency", "1")
        outputs = [result(api, "batched", i, wait=60)["output"] for i in ids]
    assert outputs == [2 * x for x in range(6)]
    assert "batch_trigger_rearmed" in worker.log.read_text()
