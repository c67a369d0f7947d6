"""A scrape costs O(functions), not O(invocations): 50 functions and 100,000 finished
records (finished by the same Lua script a worker runs, to make them quickly)."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

import pytest

from conveyor.db import keyspace
from conveyor.db.scripts import Scripts
from conveyor.invocations.records import (
    TRANSITION,
    InvocationStatus,
    new_record_fields,
    transition_args,
)
from tests.support import Stack, write_function

pytestmark = pytest.mark.integration

FUNCTIONS = 50
RECORDS = 100_000


def test_scrape_time_with_many_functions_and_records(  # type: ignore[no-untyped-def]
    make_stack, report: Callable[[str], None]
) -> None:
    stack: Stack = make_stack()
    names = [f"fn{i:02d}" for i in range(FUNCTIONS)]
    for name in names:
        write_function(
            stack.functions,
            name,
            f"# {name}\ndef run(x):\n    return x\n",
            '[function]\nhandler = "handler:run"\n',
        )
    client = stack.server.client()
    scripts = Scripts(client)
    started = time.perf_counter()
    for chunk in range(0, RECORDS, 2000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(chunk, chunk + 2000):
                invocation = str(uuid.uuid4())
                fields = new_record_fields(names[i % FUNCTIONS], "v1", "default", 5, 3600)
                fields.update(
                    status=InvocationStatus.RUNNING, started_at=repr(time.time() - (i % 7) / 100)
                )
                pipe.hset(keyspace.record(invocation), mapping=fields)
                to = InvocationStatus.FAILED if i % 10 == 0 else InvocationStatus.SUCCEEDED
                extra = (
                    {"error": '{"type": "ValueError", "message": "x"}'}
                    if to is InvocationStatus.FAILED
                    else {"output": "1"}
                )
                values = transition_args(invocation, (InvocationStatus.RUNNING,), to, **extra)
                scripts.call(TRANSITION, client=pipe, **values)
            pipe.execute()
    made = time.perf_counter() - started
    with stack.api() as api:
        api.get("/metrics")  # warm
        times = []
        for _ in range(10):
            start = time.perf_counter()
            text = api.get("/metrics").text
            times.append((time.perf_counter() - start) * 1000)
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("conveyor_invocations_total{")
    )
    assert total == RECORDS
    report(
        f"/metrics with {FUNCTIONS} functions and {RECORDS} finished records ({made:.1f} s to"
        f" make): median {statistics.median(times):.1f} ms, max {max(times):.1f} ms,"
        f" {len(text) // 1024} KiB"
    )
