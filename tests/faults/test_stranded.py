"""A message lost between kombu's BRPOP and its unacked record is queued again.

A consumer SIGKILLed between the two commands (or a primary Redis that replicated only
the first) leaves the invocation queued with its message nowhere. The test makes that
state exactly as kombu would leave it -- the message popped off its list, no unacked
entry -- before any worker runs, then starts a worker: its sweep finds the message gone
twice, pushes the kept copy again, and the invocation runs once."""

from __future__ import annotations

from collections import Counter

import pytest

from support import cancel, invoke, result, wait_for, write_recording_function

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
