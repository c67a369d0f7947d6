"""Idempotency-Key: the same key and body return the same invocation and never run it
twice; the same key with another body is a 409; deleting the invocation frees its key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import result, write_function

pytestmark = pytest.mark.faults


def test_idempotency_key(make_stack, report) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    runs = stack.root / "runs"
    write_function(
        stack.functions,
        "count",
        f"""
        def run(x: int) -> int:
            with open({str(runs)!r}, "a") as f:
                f.write(f"{{x}}\\n")
            return x
    """,
        '[function]\nhandler = "handler:run"\n',
    )
    write_function(
        stack.functions,
        "other",
        "def run(x: int) -> int:\n    return -x\n",
        '[function]\nhandler = "handler:run"\n',
    )
    stack.worker("--queues", "default")
    with stack.api() as api:

        def post(key: str, body: dict, name: str = "count"):  # type: ignore[no-untyped-def, type-arg]
            return api.post(
                f"/functions/{name}/invoke", json=body, headers={"Idempotency-Key": key}
            )

        with ThreadPoolExecutor(8) as pool:  # the same request, eight times at once
            first = list(pool.map(lambda _: post("k-1", {"input": 1}), range(8)))
        ids = {r.json()["id"] for r in first}
        assert len(ids) == 1, ids
        (invocation_id,) = ids
        assert result(api, "count", invocation_id)["output"] == 1
        again = post("k-1", {"input": 1})  # after it finished: its result, not a new run
        assert again.status_code == 200 and again.json()["id"] == invocation_id
        assert again.json()["output"] == 1

        conflict = post("k-1", {"input": 2})
        assert conflict.status_code == 409
        assert conflict.json()["type"] == "urn:conveyor:problem:idempotency-key-reused"
        assert invocation_id in conflict.json()["detail"]
        assert post("k-1", {"input": 1, "priority": 9}).status_code == 409

        other = post("k-1", {"input": 1}, "other")  # keys are per function
        assert other.status_code == 202 and other.json()["id"] != invocation_id
        new = post("k-2", {"input": 1})
        assert new.status_code == 202 and new.json()["id"] != invocation_id
        result(api, "count", new.json()["id"])
        # A user purging an invocation purges its key too: the key then starts afresh.
        assert api.delete(f"/functions/count/results/{new.json()['id']}").status_code == 204
        fresh = post("k-2", {"input": 3})
        assert fresh.status_code == 202 and fresh.json()["id"] != new.json()["id"]
        assert result(api, "count", fresh.json()["id"])["output"] == 3
        assert (
            api.post(
                "/functions/count/invoke", json={"input": 1}, headers={"Idempotency-Key": ""}
            ).status_code
            == 400
        )
    executions = runs.read_text().split()
    report(f"3 invocations (one key freed by DELETE and reused), executions {len(executions)}")
    assert executions == ["1", "1", "3"]
