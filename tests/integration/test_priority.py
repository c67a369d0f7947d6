"""A priority-9 invocation overtakes a backlog of low-priority ones on a one-process worker."""

from __future__ import annotations

import pytest

from tests.support import invoke, result, write_function

pytestmark = pytest.mark.integration

BACKLOG = 30


def test_urgent_invocation_overtakes_backlog(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    write_function(
        stack.functions,
        "sleepy",
        """
        import time
        def run(tag: str) -> str:
            time.sleep(0.1)
            return tag
    """,
        '[function]\nhandler = "handler:run"\n[queue]\nname = "batch"\npriority = 1\n',
    )
    stack.worker("--queues", "batch", "--concurrency", "1")
    with stack.api() as api:
        backlog = [invoke(api, "sleepy", f"low-{i}")[1]["id"] for i in range(BACKLOG)]
        status, urgent = invoke(api, "sleepy", "urgent", priority=9)
        assert status == 202
        done = result(api, "sleepy", urgent["id"])
        assert done["status"] == "succeeded"
        finished_before = 0
        for invocation_id in backlog:
            low = api.get(f"/functions/sleepy/results/{invocation_id}").json()
            if low.get("finished_at") and low["finished_at"] < done["finished_at"]:
                finished_before += 1
        # at most: the one running when it arrived and the one the worker had taken
        assert finished_before <= 2, f"{finished_before} low-priority ran first"
        assert result(api, "sleepy", backlog[-1], wait=60)["status"] == "succeeded"
