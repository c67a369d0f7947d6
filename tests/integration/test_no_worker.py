"""Nobody waits silently: an invocation for a queue no live worker consumes is accepted,
and the function and the result say so until a worker comes."""

from __future__ import annotations

import pytest

from tests.support import invoke, result, wait_until, write_function

pytestmark = pytest.mark.integration


def test_queue_without_workers_is_visible(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    write_function(
        stack.functions,
        "lonely",
        "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n[queue]\nname = "batch"\n',
    )
    stack.worker("--queues", "default")  # a worker, but not for "batch"
    with stack.api() as api:
        described = wait_until(
            lambda: api.get("/functions/lonely").json(),
            lambda f: f["workers"] == 0,
            10,
            "the worker census",
        )
        assert "no live worker consumes queue 'batch'" in described["warning"]
        status, accepted = invoke(api, "lonely", 7)
        assert status == 202 and "no live worker" in accepted["warning"]
        queued = result(api, "lonely", accepted["id"], wait=0)
        assert (
            queued["status"] == "queued" and "conveyor worker --queues batch" in queued["warning"]
        )

        stack.worker("--queues", "batch")
        served = wait_until(
            lambda: api.get("/functions/lonely").json(),
            lambda f: f["workers"] == 1,
            10,
            "the new worker",
        )
        assert "warning" not in served
        done = result(api, "lonely", accepted["id"], wait=30)
        assert done["status"] == "succeeded" and done["output"] == 7 and "warning" not in done
        listed = {f["name"]: f for f in api.get("/functions").json()["functions"]}
        assert listed["lonely"]["workers"] == 1
