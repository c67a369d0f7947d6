"""A worker killed with SIGKILL mid-invocation loses nothing: Redis redelivers the unacked
message after the visibility timeout (short here) to the next worker."""

from __future__ import annotations

import signal

import pytest

from tests.support import invoke, result, wait_for, write_function

pytestmark = pytest.mark.integration


def test_sigkilled_worker_loses_nothing(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(extra_settings="")
    stack.config.write_text(
        stack.config.read_text().replace("[worker]\n", "[worker]\nvisibility_timeout = 4\n")
    )
    write_function(
        stack.functions,
        "slow",
        """
        import time
        def run(seconds: float) -> float:
            time.sleep(seconds)
            return seconds
    """,
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 3\n',
    )
    first = stack.worker("--queues", "default", "--concurrency", "1")
    with stack.api() as api:
        ids = [invoke(api, "slow", 1.5)[1]["id"] for _ in range(3)]
        wait_for(
            lambda: api.get(f"/functions/slow/results/{ids[0]}").json()["status"] == "running",
            20,
            "first attempt running",
        )
        first.kill(signal.SIGKILL)
        first.proc.wait(5)
        stack.worker("--queues", "default", "--concurrency", "1")
        outcomes = [result(api, "slow", i, wait=60) for i in ids]
        assert [o["status"] for o in outcomes] == ["succeeded"] * 3, outcomes
        assert outcomes[0]["attempts"] == 2  # killed once, redelivered once
        assert all(o["output"] == 1.5 for o in outcomes)
