"""`conveyor flower` against real workers, through Flower's own HTTP API: every worker with
its queues, inspect calls that answer, tasks under their function's name, and queue
lengths that count every priority list, GPU variants included."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from tests.support import (
    Process,
    Stack,
    conveyor,
    free_port,
    invoke,
    wait_for,
    wait_until,
    write_function,
)

pytestmark = pytest.mark.acceptance

SLEEP = (
    "import time\ndef run(seconds: float) -> float:\n    time.sleep(seconds)\n    return seconds\n"
)


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    write_function(
        stack.functions, "echo", "def run(x):\n    return x\n",
        '[function]\nhandler = "handler:run"\n[queue]\nname = "realtime"\n',
    )  # fmt: skip
    write_function(
        stack.functions, "render", SLEEP,
        '[function]\nhandler = "handler:run"\n[resources]\ngpu = 1\n[limits]\ntimeout = 60\n',
    )  # fmt: skip
    stack.worker("--queues", "realtime")
    stack.supervisor("--gpus", "0,", "--queues", "default", expect=1)
    return stack


PASSWORD = re.compile(r"user 'conveyor', password '([^']+)'")


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[str]:
    port = free_port()
    log = stack.root / "flower.log"
    proc = Process(conveyor("flower", "--port", str(port)), stack.config, log)
    base = f"http://127.0.0.1:{port}"
    password = wait_for(lambda: PASSWORD.search(log.read_text()), 30, "the printed password")[1]
    AUTH.append(("conveyor", password))
    wait_until(lambda: get(f"{base}/healthcheck", timeout=5).status_code, lambda s: s == 200, 30)
    # No password, no API: Flower's unauthenticated API is never turned on.
    assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
    yield base
    proc.stop()


AUTH: list[tuple[str, str]] = []


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, auth=AUTH[-1], **kwargs)


def workers(base: str) -> dict[str, Any]:
    return get(f"{base}/api/workers", params={"refresh": 1}, timeout=30).json()  # type: ignore[no-any-return]


def test_flower_sees_every_worker_and_inspects_it(
    flower: str, report: Callable[[str], None]
) -> None:
    found = wait_until(lambda: workers(flower), lambda w: len(w) == 2, 30, "both workers")
    queues = {
        name: sorted(q["name"] for q in info["active_queues"]) for name, info in found.items()
    }
    assert sorted(queues.values()) == [["default.gpu"], ["realtime"]], queues
    for info in found.values():  # each inspect call answered
        assert info["stats"]["pool"]["implementation"].endswith("TaskPool")
        assert "conveyor.run" in info["registered"] and "conveyor.batch" in info["registered"]
        assert info["conf"]["broker_transport_options"]["sep"] == ":"
    report(f"Flower lists {len(found)} workers: {queues}")


def test_tasks_show_the_function_name(flower: str, api: TestClient) -> None:  # type: ignore[type-arg]
    # Flower turns task events on a few seconds after it starts; tasks run before that
    # never reach it, and one running as they are turned on reaches it without its
    # 'received' event (so without its name). Invoke until three in a row are whole there.
    def three_seen() -> list[dict[str, Any]]:
        ids = [invoke(api, "echo", n, wait=30)[1]["id"] for n in range(3)]
        time.sleep(0.5)  # Flower's events arrive a moment after the result
        tasks = get(f"{flower}/api/tasks", timeout=10).json()
        return [
            tasks[i]
            for i in ids
            if i in tasks and tasks[i]["state"] == "SUCCESS" and tasks[i].get("received")
        ]

    tasks = wait_until(three_seen, lambda t: len(t) == 3, 60, "tasks in Flower")
    assert {task["name"] for task in tasks} == {"echo"}


def test_queue_lengths_count_every_priority_and_gpu_queues(flower: str, api: TestClient) -> None:  # type: ignore[type-arg]
    invoke(api, "render", 3.0)  # occupies the one GPU process
    for priority in (1, 1, 5, 9, 9):
        status, _ = invoke(api, "render", 0.01, priority=priority)
        assert status == 202
    lengths = wait_until(
        lambda: {
            q["name"]: q["messages"]
            for q in get(f"{flower}/api/queues/length", timeout=10).json()["active_queues"]
        },
        lambda q: q.get("default.gpu") == 5,
        10,
        "five waiting GPU invocations",
    )
    assert lengths["realtime"] == 0
