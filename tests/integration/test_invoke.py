"""Invocations over the real HTTP app, through real Redis, on a real worker process."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from tests.support import (
    Stack,
    cancel,
    copy_examples,
    invoke,
    result,
    until_reloaded,
    wait_for,
    write_function,
)

pytestmark = pytest.mark.integration

FLAKY = """
    from pathlib import Path
    COUNTER = Path(__file__).parent.parent.parent / "flaky-calls"  # outside the watched tree
    def run(fail_times: int) -> dict:
        calls = int(COUNTER.read_text()) if COUNTER.exists() else 0
        COUNTER.write_text(str(calls + 1))
        if calls < fail_times:
            raise RuntimeError(f"transient failure {calls + 1}")
        return {"calls": calls + 1}
"""

MISC = """
    import os, time
    from celery.exceptions import SoftTimeLimitExceeded
    def run(action: str):
        if action == "value-error":
            raise ValueError("bad value")
        if action == "sleep":  # ignores the soft limit: only the hard limit stops it
            end = time.monotonic() + 30
            while time.monotonic() < end:
                try:
                    time.sleep(end - time.monotonic())
                except SoftTimeLimitExceeded:
                    pass
        if action == "soft":
            try:
                time.sleep(30)
            except SoftTimeLimitExceeded:
                return "cleaned up after the soft limit"
        if action == "soft-unhandled":
            time.sleep(30)
        if action == "object":
            return object()
        if action == "exit":
            os._exit(1)
        if action == "sys-exit":
            raise SystemExit(3)
        return action
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    stack = make_stack()
    copy_examples(stack.functions, "echo", "iris")
    write_function(
        stack.functions,
        "flaky",
        FLAKY,
        """
        [function]
        handler = "handler:run"
        [retries]
        max = 3
        backoff = 0.1
        on = ["RuntimeError"]
    """,
    )
    write_function(
        stack.functions,
        "misc",
        MISC,
        """
        [function]
        handler = "handler:run"
        [queue]
        name = "batch"
        [limits]
        timeout = 2
        soft_timeout = 1
        max_input_bytes = 64
        [retries]
        max = 2
        on = ["RuntimeError"]
        [results]
        ttl = 5
    """,
    )
    write_function(
        stack.functions,
        "even",
        """
        from typing import Annotated
        from pydantic import AfterValidator
        def even(n: int) -> int:
            if n % 2:
                raise ValueError(f"{n} is odd")
            return n
        def run(x: Annotated[int, AfterValidator(even)]) -> int:
            return x
        """,
        '[function]\nhandler = "handler:run"\n',
    )
    stack.worker("--concurrency", "2")
    yield stack


def test_echo_round_trip_with_wait(api: TestClient) -> None:  # type: ignore[type-arg]
    status, body = invoke(api, "echo", {"hello": ["world", 1]}, wait=30)
    assert status == 200, body
    assert body["status"] == "succeeded"
    assert body["output"] == {"hello": ["world", 1]}
    assert body["attempts"] == 1 and body["queue"] == "realtime"
    assert body["created_at"] <= body["started_at"] <= body["finished_at"]


def test_iris_predicts_a_species(api: TestClient) -> None:  # type: ignore[type-arg]
    status, accepted = invoke(
        api,
        "iris",
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    )
    assert status == 202 and accepted["status"] == "queued"
    assert accepted["result_url"] == f"/functions/iris/results/{accepted['id']}"
    done = result(api, "iris", accepted["id"])
    assert done["status"] == "succeeded", done
    assert done["output"]["species"] == "setosa"
    assert done["version"] == accepted["version"]


def test_listing_and_schema(api: TestClient) -> None:  # type: ignore[type-arg]
    listed = {f["name"]: f for f in api.get("/functions").json()["functions"]}
    assert listed["iris"]["status"] == "ready" and listed["iris"]["queue"] == "realtime"
    assert listed["iris"]["priority"] == 7
    iris = api.get("/functions/iris").json()
    assert set(iris["input_schema"]["required"]) == {
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    }
    assert iris["output_schema"]["properties"]["species"] == {"title": "Species", "type": "string"}
    doc = api.get("/schema").json()
    invoke_iris = doc["paths"]["/functions/iris/invoke"]["post"]
    assert invoke_iris["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/iris.Result"
    }
    schemas = doc["components"]["schemas"]
    assert schemas["iris.Result"]["properties"]["output"] == {
        "$ref": "#/components/schemas/iris.IrisOutput"
    }
    assert schemas["iris.IrisInput"]["required"] == iris["input_schema"]["required"]
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200


def test_errors_are_problem_details(api: TestClient) -> None:  # type: ignore[type-arg]
    response = api.post("/functions/iris/invoke", json={"input": {"sepal_length": "long"}})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = [e["field"] for e in response.json()["errors"]]
    assert "input.sepal_length" in fields and "input.petal_width" in fields
    assert api.post("/functions/nope/invoke", json={"input": 1}).status_code == 404
    missing = api.get("/functions/echo/results/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and "never submitted" in missing.json()["detail"]
    assert api.post("/functions/misc/invoke", json={"input": "x" * 100}).status_code == 413
    not_json = api.post(
        "/functions/echo/invoke", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["detail"]
    form = api.post(
        "/functions/echo/invoke",
        content=b"a=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    assert api.post("/functions/echo/invoke", json={"inputs": 1}).status_code == 422
    assert api.post("/functions/echo/invoke", json={"input": 1, "priority": 12}).status_code == 422
    assert api.post("/functions/echo/invoke?wait=61", json={"input": 1}).status_code == 400
    misspelt = api.post("/functions/echo/invoke?wiat=5", json={"input": 1})
    assert misspelt.status_code == 400
    assert misspelt.json()["detail"] == (
        "unknown query parameter 'wiat'; this route takes version, wait"
    )
    assert api.get("/functions?limit=3").status_code == 400


def test_worker_checks_what_json_schema_cannot(api: TestClient) -> None:  # type: ignore[type-arg]
    # The API checks the JSON Schema (an integer); only the worker's pydantic knows "even".
    status, done = invoke(api, "even", 3, wait=30)
    assert status == 200 and done["status"] == "failed", done
    assert done["error"]["type"] == "ValidationError"
    assert "input: Value error, 3 is odd" in done["error"]["message"]
    assert "traceback" not in done["error"]
    assert invoke(api, "even", 4, wait=30)[1]["output"] == 4
    status, problem = invoke(api, "even", "4")
    assert status == 422 and problem["errors"][0]["field"] == "input"


def test_delete_removes_a_finished_invocation(api: TestClient) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "echo", "private", wait=30)
    url = f"/functions/echo/results/{done['id']}"
    assert api.delete(f"/functions/iris/results/{done['id']}").status_code == 404
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    assert api.delete(url).status_code == 404
    _, queued = invoke(api, "misc", "sleep")
    unfinished = api.delete(f"/functions/misc/results/{queued['id']}")
    assert unfinished.status_code == 409, unfinished.text
    assert f"POST /functions/misc/results/{queued['id']}/cancel" in unfinished.json()["detail"]
    assert cancel(api, "misc", queued["id"]).json()["status"] == "cancelled"
    assert api.delete(f"/functions/misc/results/{queued['id']}").status_code == 204


def test_methods_a_path_allows(api: TestClient) -> None:  # type: ignore[type-arg]
    url = "/functions/echo/results/00000000-0000-4000-8000-000000000000"
    allowed = api.options(url)
    assert allowed.status_code == 204 and allowed.headers["allow"] == "DELETE, GET, OPTIONS"
    assert api.options("/functions/echo/invoke").headers["allow"] == "OPTIONS, POST"
    refused = api.put(url)
    assert refused.status_code == 405
    assert refused.headers["content-type"].startswith("application/problem+json")


def test_retries_listed_exceptions_with_backoff(api: TestClient) -> None:  # type: ignore[type-arg]
    _, accepted = invoke(api, "flaky", 2)
    done = result(api, "flaky", accepted["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 3 and done["output"] == {"calls": 3}


def test_unlisted_exception_fails_at_once(api: TestClient) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "misc", "value-error", wait=30)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["type"] == "ValueError" and done["error"]["message"] == "bad value"
    _, done = invoke(api, "misc", "object", wait=30)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "OutputNotSerializableError"


def test_a_handler_that_kills_its_process_fails_visibly(api: TestClient) -> None:  # type: ignore[type-arg]
    _, accepted = invoke(api, "misc", "exit")
    done = result(api, "misc", accepted["id"], wait=60)
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "WorkerLostError"
    assert "died" in done["error"]["message"]
    _, after = invoke(api, "misc", "after", wait=30)
    assert after["output"] == "after"


def test_a_handler_calling_sys_exit_fails(api: TestClient) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "misc", "sys-exit", wait=30)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["type"] == "SystemExit" and done["error"]["message"] == "3"


def test_soft_limit_failure_says_which_limit(api: TestClient) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "misc", "soft-unhandled", wait=30)
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "SoftTimeLimitExceeded"
    assert done["error"]["message"] == "the attempt ran past its soft time limit of 1.0s"


def test_soft_limit_raises_inside_the_handler(api: TestClient) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "misc", "soft", wait=30)
    assert done["status"] == "succeeded", done
    assert done["output"] == "cleaned up after the soft limit"


def test_hard_limit_kills_the_attempt_and_worker_goes_on(api: TestClient) -> None:  # type: ignore[type-arg]
    _, killed = invoke(api, "misc", "sleep")
    _, after = invoke(api, "misc", "after")
    done = result(api, "misc", killed["id"])
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "TimeLimitExceeded"
    assert "hard time limit of 2.0s" in done["error"]["message"]
    assert result(api, "misc", after["id"])["output"] == "after"


def test_results_expire_after_ttl(api: TestClient) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "misc", "short-lived", wait=30)
    assert done["status"] == "succeeded"
    url = f"/functions/misc/results/{done['id']}"
    assert api.get(url).status_code == 200
    wait_for(lambda: api.get(url).status_code == 404, 15, "result expiry")


def test_result_of_another_function_is_404(api: TestClient) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "echo", 1, wait=30)
    assert api.get(f"/functions/iris/results/{done['id']}").status_code == 404


def test_cancel_queued_and_running(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    # Two long attempts occupy both processes; the third waits in the queue.
    running = [invoke(api, "misc", "sleep")[1] for _ in range(2)]
    _, queued = invoke(api, "misc", "never-runs")
    wait_for(
        lambda: all(result(api, "misc", r["id"], 0)["status"] == "running" for r in running),
        10,
        "both running",
    )
    cancelled = cancel(api, "misc", queued["id"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    stopped = cancel(api, "misc", running[0]["id"]).json()
    assert stopped["status"] == "cancelled"
    time.sleep(2.5)  # past the hard limit: a cancelled attempt must not come back as failed
    assert result(api, "misc", queued["id"], 0)["status"] == "cancelled"
    assert result(api, "misc", queued["id"], 0)["attempts"] == 0
    assert result(api, "misc", running[0]["id"], 0)["status"] == "cancelled"
    again = cancel(api, "misc", running[1]["id"])
    assert again.status_code == 409 and "already failed" in again.json()["detail"]


def test_deploy_change_break_and_remove(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    manifest = '[function]\nhandler = "handler:run"\n'
    write_function(stack.functions, "hot", "def run(x: int) -> str:\n    return 'v1'\n", manifest)
    v1 = until_reloaded(api, "hot", lambda r: r.get("status") == "ready")["version"]
    _, done = invoke(api, "hot", 1, wait=30)
    assert done["output"] == "v1" and done["version"] == v1  # the worker loaded it on demand

    (stack.functions / "hot" / "handler.py").write_text(
        "def run(x: int) -> str:\n    return 'v2'\n"
    )
    v2 = until_reloaded(api, "hot", lambda r: r.get("version") not in (None, v1))["version"]
    _, done = invoke(api, "hot", 1, wait=30)
    assert done["output"] == "v2" and done["version"] == v2

    (stack.functions / "hot" / "function.toml").write_text(manifest + "colour = 'red'\n")
    broken = until_reloaded(api, "hot", lambda r: r.get("status") == "error")
    assert "colour: unknown key" in broken["error"] and broken["version"] == v2
    _, done = invoke(api, "hot", 1, wait=30)
    assert done["status"] == "succeeded" and done["output"] == "v2"  # last good serves

    shutil.rmtree(stack.functions / "hot")
    wait_for(lambda: api.get("/functions/hot").status_code == 404, 10, "removal")
    assert api.post("/functions/hot/invoke", json={"input": 1}).status_code == 404


def test_invocation_logs_carry_the_context(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    _, done = invoke(api, "echo", "logged", wait=30)

    def finished() -> list[dict]:  # type: ignore[type-arg]
        return [
            e
            for e in stack.workers[0].events()
            if e.get("event") == "invocation_finished" and e.get("invocation_id") == done["id"]
        ]

    # the worker logs just after it stores the result the API has already returned
    events = wait_for(finished, 10, "the invocation_finished event")
    event = events[0]
    assert event["function"] == "echo" and event["version"] == done["version"]
    assert event["queue"] == "realtime" and event["attempt"] == 1
    assert event["outcome"] == "succeeded" and event["duration_ms"] >= 0
