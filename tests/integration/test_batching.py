"""Dynamic batching on a real worker: items run together, keep their own results, fail
alone, and survive a dead pool child."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from tests.support import Stack, cancel, invoke, result, wait_for, write_function

pytestmark = pytest.mark.integration

BATCHER = """
    import os, time
    from pathlib import Path
    from pydantic import BaseModel

    MARKERS = Path(__file__).parent.parent.parent / "markers"  # outside the watched tree
    MARKERS.mkdir(exist_ok=True)

    class Item(BaseModel):
        n: int
        mode: str = "ok"

    class Batcher:
        def setup(self):
            self.pid = os.getpid()

        def predict_batch(self, items: list[Item]) -> list[dict]:
            for item in items:
                marker = MARKERS / f"{item.mode}-{item.n}"
                calls = int(marker.read_text()) if marker.exists() else 0
                marker.write_text(str(calls + 1))
                if item.mode == "die-once" and calls == 0:
                    os._exit(1)
                # fails its attempt: in the batch and again when run alone
                if item.mode == "flaky" and calls < 2:
                    raise RuntimeError("transient")
                if item.mode == "hang":
                    time.sleep(30)
                if item.mode == "bad":
                    raise ValueError(f"bad item {item.n}")
                if item.mode == "slow":
                    time.sleep(1)
            time.sleep(0.05)
            return [{"n": i.n, "batch": len(items), "pid": self.pid} for i in items]
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    stack = make_stack()
    write_function(
        stack.functions,
        "batcher",
        BATCHER,
        """
        [function]
        handler = "handler:Batcher"
        [queue]
        name = "batch"
        [limits]
        timeout = 3
        [retries]
        max = 1
        backoff = 0.1
        on = ["RuntimeError"]
        [batching]
        max_batch_size = 8
        max_wait_ms = 300
    """,
    )
    write_function(
        stack.functions,
        "other",
        "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n[queue]\nname = "batch"\n',
    )
    stack.worker("--queues", "batch", "--concurrency", "1")
    yield stack


def submit_all(api: TestClient, inputs: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    ids = [invoke(api, "batcher", item)[1]["id"] for item in inputs]
    return [result(api, "batcher", i, wait=60) for i in ids]


def test_items_run_together_with_their_own_results(api: TestClient) -> None:  # type: ignore[type-arg]
    listed = api.get("/functions/batcher").json()
    assert listed["batching"] == {"max_batch_size": 8, "max_wait_ms": 300.0}
    done = submit_all(api, [{"n": n} for n in range(20)])
    assert [d["status"] for d in done] == ["succeeded"] * 20
    assert [d["output"]["n"] for d in done] == list(range(20))
    assert len({d["id"] for d in done}) == 20
    sizes = [d["output"]["batch"] for d in done]
    assert max(sizes) > 1 and max(sizes) <= 8, sizes
    assert all(d["attempts"] == 1 and d["finished_at"] for d in done)


def test_a_lone_item_runs(api: TestClient) -> None:  # type: ignore[type-arg]
    status, done = invoke(api, "batcher", {"n": 99}, wait=30)
    assert status == 200 and done["output"]["n"] == 99 and done["output"]["batch"] == 1


def test_one_bad_item_fails_alone(api: TestClient) -> None:  # type: ignore[type-arg]
    done = submit_all(api, [{"n": 1}, {"n": 2, "mode": "bad"}, {"n": 3}])
    assert [d["status"] for d in done] == ["succeeded", "failed", "succeeded"]
    assert done[1]["error"]["type"] == "ValueError"
    assert done[1]["error"]["message"] == "bad item 2"


def test_retryable_item_retries_alone(api: TestClient) -> None:  # type: ignore[type-arg]
    done = submit_all(api, [{"n": 1}, {"n": 5, "mode": "flaky"}])
    assert [d["status"] for d in done] == ["succeeded", "succeeded"]
    assert done[0]["attempts"] == 1 and done[1]["attempts"] == 2


def test_items_of_a_dead_child_run_again(api: TestClient) -> None:  # type: ignore[type-arg]
    done = submit_all(api, [{"n": 1}, {"n": 6, "mode": "die-once"}, {"n": 2}])
    assert [d["status"] for d in done] == ["succeeded"] * 3, done
    assert done[1]["attempts"] == 2


def test_a_batch_past_its_hard_limit_fails_its_items(api: TestClient) -> None:  # type: ignore[type-arg]
    done = submit_all(api, [{"n": 1, "mode": "hang"}])
    assert done[0]["status"] == "failed" and done[0]["error"]["type"] == "TimeLimitExceeded"
    after = submit_all(api, [{"n": 2}])
    assert after[0]["status"] == "succeeded"


def test_cancelled_item_is_skipped(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    busy = invoke(api, "batcher", {"n": 1, "mode": "hang"})[1]
    queued = invoke(api, "batcher", {"n": 2})[1]
    assert cancel(api, "batcher", queued["id"]).json()["status"] == "cancelled"
    assert result(api, "batcher", busy["id"], wait=60)["status"] == "failed"
    assert result(api, "batcher", queued["id"], wait=0)["status"] == "cancelled"
    assert submit_all(api, [{"n": 3}])[0]["status"] == "succeeded"


def _behind_a_slow_batch(api: TestClient, inputs: list[dict]) -> list[str]:  # type: ignore[type-arg]
    """Invoke a slow item alone (1 s), then ``inputs`` while it runs: a backlog."""
    slow = invoke(api, "batcher", {"n": 0, "mode": "slow"})[1]["id"]
    wait_for(lambda: result(api, "batcher", slow, wait=0)["status"] == "running", 5)
    return [invoke(api, "batcher", item)[1]["id"] for item in inputs] + [slow]


def test_a_backlog_runs_batch_after_batch_in_one_task(  # type: ignore[no-untyped-def]
    api: TestClient,  # type: ignore[type-arg]
    stack: Stack,
) -> None:
    ids = _behind_a_slow_batch(api, [{"n": 100 + n} for n in range(24)])
    done = [result(api, "batcher", i, wait=60) for i in ids]
    assert [d["status"] for d in done] == ["succeeded"] * 25
    assert [d["output"]["batch"] for d in done[:24]] == [8] * 24
    # The slow batch's task stopped at its time budget; one more task ran the three
    # batches of the backlog, without a trip through the worker's parent between them.
    events = [e for e in stack.workers[0].events() if e.get("event") == "batch_finished"]
    per_task = Counter(e["task_id"] for e in events[-4:])
    assert sorted(per_task.values()) == [1, 3], events[-4:]


def test_a_backlog_lets_other_work_on_its_queue_go_first(api: TestClient) -> None:  # type: ignore[type-arg]
    ids = _behind_a_slow_batch(api, [{"n": 200 + n} for n in range(16)])
    other = invoke(api, "other", 7)[1]["id"]
    done = [result(api, "batcher", i, wait=60) for i in ids[:16]]
    ran = result(api, "other", other, wait=60)
    assert ran["output"] == 7 and [d["output"]["batch"] for d in done] == [8] * 16
    # The first batch of the backlog ran, saw `other` waiting and ended its task:
    # `other` ran before the second batch began.
    assert max(d["finished_at"] for d in done[:8]) <= ran["started_at"]
    assert ran["finished_at"] <= min(d["started_at"] for d in done[8:])
