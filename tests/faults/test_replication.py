"""Acknowledged means replicated (issue 15): with `[redis] min_replicas = 1`, a submit the
replica does not confirm in time is withdrawn and a 503; one a worker had already started
is a 202 with a warning (a client retrying a 503 would run it twice).

A real primary and a real replica; the replica is frozen with SIGSTOP (it stays connected
but acknowledges nothing, as a replica that lags does), then thawed."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support import RedisServer, Stack, invoke, result, wait_for, write_recording_function

pytestmark = pytest.mark.faults


@pytest.fixture
def replicated(make_stack) -> Iterator[tuple[Stack, RedisServer]]:  # type: ignore[no-untyped-def]
    stack = make_stack()
    replica = RedisServer(stack.root / "replica").replicate(stack.server)
    stack.set_settings("redis", min_replicas=1, replica_timeout=1.5)
    write_recording_function(stack.functions, "work", stack.root / "runs")
    yield stack, replica
    if replica.proc is not None:
        os.kill(replica.proc.pid, signal.SIGCONT)
    replica.stop()


def runs(stack: Stack) -> Counter[str]:
    path = stack.root / "runs"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def test_unconfirmed_submit_is_withdrawn(replicated: tuple[Stack, RedisServer]) -> None:
    stack, replica = replicated
    assert replica.proc is not None
    with stack.api() as api:
        status, first = invoke(api, "work", 1)
        assert status == 202, first  # the replica confirmed it

        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            refused = api.post(
                "/functions/work/invoke", json={"input": 2}, headers={"Idempotency-Key": "k-2"}
            )
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        problem = refused.json()
        assert problem["type"] == "urn:conveyor:problem:not-replicated"
        assert problem["accepted"] is False
        assert "withdrawn and will not run" in problem["detail"]
        withdrawn = problem["invocation_id"]
        # Not accepted means not there: no record, the version counted in use once (the
        # first invocation's), and the key free for the retry.
        missing = api.get(f"/functions/work/results/{withdrawn}")
        assert missing.status_code == 404, missing.text
        assert sum(map(int, stack.redis.hvals("conveyor:versions-in-use"))) == 1

        stack.worker("--queues", "default", "--concurrency", "1")
        assert result(api, "work", first["id"])["output"] == 1
        again = api.post(
            "/functions/work/invoke", json={"input": 2}, headers={"Idempotency-Key": "k-2"}
        )
        assert again.status_code == 202, again.text
        assert again.json()["id"] != withdrawn
        assert result(api, "work", again.json()["id"])["output"] == 2
    ran = runs(stack)
    # The withdrawn invocation's message was delivered too: the worker found no record.
    assert withdrawn not in ran
    assert ran == Counter({first["id"]: 1, again.json()["id"]: 1})
    log = (stack.root / "worker-0.log").read_text()
    assert "invocation_record_missing" in log and withdrawn in log


def test_unconfirmed_submit_a_worker_started(replicated: tuple[Stack, RedisServer]) -> None:
    stack, replica = replicated
    assert replica.proc is not None
    worker = stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        status, warm = invoke(api, "work", 0, wait=30)
        assert status == 200, warm

        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            answer = api.post("/functions/work/invoke", json={"input": 3})
            assert answer.status_code == 202, answer.text
            problem = {"invocation_id": answer.json()["id"]}
            # The idle worker took it within the 1.5 s the API waited for the replica.
            assert "not yet replicated" in answer.json()["warning"], answer.json()
            assert "a worker had already started it" in answer.json()["warning"]
            done = result(api, "work", problem["invocation_id"])
            assert done["status"] == "succeeded" and done["output"] == 3
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
    # The worker waited for the replica too before acknowledging, and said it did not come.
    wait_for(lambda: "write_not_replicated" in worker.log.read_text(), 10, "the worker's warning")
    assert runs(stack)[problem["invocation_id"]] == 1
