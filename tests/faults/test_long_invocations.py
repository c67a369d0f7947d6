"""An invocation running longer than the visibility timeout is not started a second time
while its first attempt is alive: the worker renews its hold on the message."""

from __future__ import annotations

import time

import pytest

from tests.support import invoke, result, write_function

pytestmark = pytest.mark.faults


def test_long_invocation_runs_once(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    # Deliberately shorter than the function's run time: without the renewals Redis
    # hands the message to the second worker after 2 s.
    stack.config.write_text(
        stack.config.read_text()
        .replace("[worker]\n", "[worker]\nvisibility_timeout = 2\n")
        .replace("restore_interval = 1.0", "restore_interval = 0.5")
    )
    runs = stack.root / "runs"
    write_function(
        stack.functions,
        "long",
        f"""
        import os, time
        def run(seconds: float) -> int:
            with open({str(runs)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(seconds)
            return os.getpid()
    """,
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 20\n',
    )
    stack.worker("--queues", "default")
    stack.worker("--queues", "default")
    with stack.api() as api:
        _, accepted = invoke(api, "long", 6)
        done = result(api, "long", accepted["id"], wait=60)
    executions = runs.read_text().split()
    report(
        f"accepted 1, completed {int(done['status'] == 'succeeded')}, executions {len(executions)}"
    )
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert len(executions) == 1, f"started {len(executions)} times"


def test_a_long_batch_keeps_its_items(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    """A batch running longer than the visibility timeout: its parent claims its items
    again, so the other worker's trigger never takes them while it lives."""
    stack = make_stack()
    stack.set_worker(visibility_timeout=2, restore_interval=0.5)
    runs = stack.root / "runs"
    write_function(
        stack.functions,
        "slowbatch",
        f"""
        import os, time
        class Model:
            def predict_batch(self, xs: list[int]) -> list[int]:
                with open({str(runs)!r}, "a") as f:
                    f.write("".join(f"{{x}}\\n" for x in xs))
                time.sleep(6)
                return xs
    """,
        '[function]\nhandler = "handler:Model"\n[limits]\ntimeout = 20\n'
        "[batching]\nmax_batch_size = 4\nmax_wait_ms = 100\n",
    )
    stack.worker("--queues", "default")
    stack.worker("--queues", "default")
    with stack.api() as api:
        ids = [invoke(api, "slowbatch", i)[1]["id"] for i in range(4)]
        # a second trigger after the visibility timeout: the other worker runs it
        time.sleep(3)
        ids.append(invoke(api, "slowbatch", 9)[1]["id"])
        done = [result(api, "slowbatch", i, wait=60) for i in ids]
    executions = runs.read_text().split()
    report(f"items 5, executions {len(executions)}")
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in done), done
    assert sorted(executions) == ["0", "1", "2", "3", "9"], executions
