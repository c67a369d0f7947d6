"""The platform on Redis Sentinel (issue 15): a primary, one replica and three sentinels
on loopback, `[redis] sentinels` in deploy.toml, a real `conveyor api` and `conveyor worker`.
The primary is SIGKILLed; the sentinels elect the replica, and the API, its `?wait`
listener and the worker follow it by themselves."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Sentinels, Stack, free_port, start_api, wait_for, write_function

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    cluster = Sentinels(tmp_path / "redis")
    yield cluster
    cluster.stop()


@pytest.fixture
def stack(tmp_path: Path, sentinels: Sentinels) -> Iterator[Stack]:
    stack = Stack(tmp_path / "stack", sentinels.primary)
    text = stack.config.read_text()
    stack.config.write_text(text.replace("[redis]\n", "[redis]\n" + sentinels.settings()))
    write_function(
        stack.functions,
        "echo",
        "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n',
    )
    yield stack
    for proc in stack.workers:
        proc.stop()


def invoke(base: str, x: int, wait: float = 10) -> httpx.Response:
    return httpx.post(
        f"{base}/functions/echo/invoke", params={"wait": wait}, json={"input": x}, timeout=30
    )


def test_api_and_worker_follow_a_failover(
    stack: Stack,
    sentinels: Sentinels,
    report,  # type: ignore[no-untyped-def]
) -> None:
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    stack.workers.append(proc)
    stack.worker("--queues", "default", "--concurrency", "1")
    wait_for(lambda: invoke(base, 0).status_code == 200, 60, "echo through the sentinels' primary")
    old = sentinels.current_primary_port()

    sentinels.kill_primary()
    killed = time.monotonic()
    answers: Counter[int] = Counter()
    odd: list[str] = []

    def serving_again() -> bool:
        answer = invoke(base, 1, wait=5)
        answers[answer.status_code] += 1
        if answer.status_code not in (200, 503):
            odd.append(f"{answer.status_code} {answer.text[:300]}")
        return answer.status_code == 200 and answer.json()["output"] == 1

    wait_for(serving_again, 60, "an answer from the new primary")
    back = time.monotonic() - killed
    assert sentinels.current_primary_port() != old
    # While there was no primary the API said so: 503s (or a 202 it kept), never a 500.
    assert set(answers) <= {200, 202, 503}, odd

    # Everything accepted from now on runs: submitted, then long-polled (the listener that
    # wakes `?wait` follows the primary too).
    ids = []
    for i in range(20):
        answer = httpx.post(f"{base}/functions/echo/invoke", json={"input": i}, timeout=30)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["result_url"])
    outputs = [httpx.get(f"{base}{url}", params={"wait": 30}, timeout=60).json() for url in ids]
    assert [o["output"] for o in outputs] == list(range(20)), outputs
    report(
        f"primary SIGKILLed: first 200 through the new primary after {back:.1f} s;"
        f" answers meanwhile {dict(answers)}"
    )
