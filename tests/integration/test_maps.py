"""Map jobs against real processes: the app in this process, workers as `conveyor worker`.

20,000-item jobs over an echo and a batching function, per-item failures and retries, the
two orders of the results stream and resuming it, watching, listing, idempotency, cancel
(nothing starts after the answer), and the errors a bad request gets.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Stack, invoke, result, wait_for, write_function

pytestmark = pytest.mark.integration

NDJSON = {"content-type": "application/x-ndjson"}

ECHO = "def run(x):\n    return x\n"

# Batch sizes go to a file: a job must hand a batching function full batches.
BATCHED = """
class Doubler:
    def predict_batch(self, xs: list[int]) -> list[int]:
        with open({sizes!r}, "a") as f:
            f.write(f"{{len(xs)}}\\n")
        return [x * 2 for x in xs]
"""

# Fails for multiples of 10 (not retried), needs a second attempt for multiples of 7 (a
# RuntimeError is retried), runs past the time limit for 13 and 26; a string is invalid.
FLAKY = """
import time
from conveyor import context

def run(x: int) -> int:
    if x in (13, 26):
        time.sleep(5)
    if x % 10 == 0:
        raise ValueError(f"{x} is a multiple of 10")
    if x % 7 == 0 and context.current().attempt == 1:
        raise RuntimeError("try again")
    return x
"""

# Every start goes to a file, then the item takes its time: a cancel must leave that file
# as it was when the cancel was answered.
SLOW = """
import time

def run(x: dict) -> int:
    with open({starts!r}, "a") as f:
        f.write(f"{{x['i']}}\\n")
    time.sleep(x.get("sleep", 0.02))
    return x["i"]
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    functions = stack.functions
    write_function(functions, "echo", ECHO, '[function]\nhandler = "handler:run"\n')
    write_function(
        functions,
        "doubler",
        BATCHED.format(sizes=str(stack.root / "sizes")),
        '[function]\nhandler = "handler:Doubler"\n[batching]\nmax_batch_size = 16\nmax_wait_ms = 50\n',
    )
    write_function(
        functions,
        "flaky",
        FLAKY,
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 1\n'
        '[retries]\nmax = 2\nbackoff = 0.2\non = ["RuntimeError"]\n[results]\nttl = 120\n',
    )
    write_function(
        functions,
        "slow",
        SLOW.format(starts=str(stack.root / "starts")),
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 120\n',
    )
    stack.worker("--queues", "default", "--concurrency", "2")
    return stack


def submit(api: TestClient, name: str, inputs: list[Any], **body: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    response = api.post(f"/functions/{name}/map", json={"inputs": inputs, **body})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def ndjson(lines: list[Any]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def finished(api: TestClient, job: dict[str, Any], timeout: float = 120) -> dict[str, Any]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(job["status_url"], params={"wait": 5}).json()
        if body["finished_at"] is not None:
            return body  # type: ignore[no-any-return]
    raise AssertionError(f"job {job['id']} did not finish: {body}")


def lines(api: TestClient, job: dict[str, Any], **params: Any) -> list[dict[str, Any]]:  # type: ignore[type-arg]
    response = api.get(job["results_url"], params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def test_20000_items_over_echo(api: TestClient) -> None:  # type: ignore[type-arg]
    inputs = [{"i": i, "text": f"row {i}"} for i in range(20_000)]
    response = api.post("/functions/echo/map", content=ndjson(inputs), headers=NDJSON)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["total"] == 20_000 and accepted["function"] == "echo"
    assert response.headers["location"] == accepted["status_url"]
    assert accepted["status"] in ("running", "succeeded")
    done = finished(api, accepted)
    assert done["status"] == "succeeded" and done["progress"] == 1.0
    assert done["counts"] == {
        "succeeded": 20_000,
        "failed": 0,
        "cancelled": 0,
        "expired": 0,
        "pending": 0,
    }
    assert done["items_per_second"] > 0 and done["eta_seconds"] is None
    got = lines(api, accepted)
    assert [line["index"] for line in got] == list(range(20_000))
    assert [line["output"] for line in got] == inputs
    assert all(line["status"] == "succeeded" and line["attempts"] == 1 for line in got)
    assert all(line["duration_ms"] >= 0 for line in got)
    listed = api.get("/functions/echo/jobs").json()["jobs"]
    assert accepted["id"] in [j["id"] for j in listed]


def test_the_json_form_and_its_envelope(api: TestClient) -> None:  # type: ignore[type-arg]
    job = submit(api, "echo", [[1, 2], "x", None, 1.5, {"a": {"b": []}}], priority=9)
    assert job["priority"] == 9 and job["total"] == 5
    finished(api, job)
    assert [line["output"] for line in lines(api, job)] == [
        [1, 2],
        "x",
        None,
        1.5,
        {"a": {"b": []}},
    ]


def test_a_batching_function_gets_full_batches(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    job = submit(api, "doubler", list(range(20_000)))
    done = finished(api, job)
    assert done["status"] == "succeeded", done
    got = lines(api, job)
    assert [line["output"] for line in got] == [2 * i for i in range(20_000)]
    sizes = Counter(int(n) for n in (stack.root / "sizes").read_text().split())
    assert sum(n * c for n, c in sizes.items()) == 20_000
    assert sizes[16] == 20_000 // 16, sizes  # every batch full


def test_items_fail_by_themselves_and_retry(api: TestClient) -> None:  # type: ignore[type-arg]
    inputs: list[Any] = list(range(1, 61))
    inputs[4] = "five"  # index 4: not an integer
    job = submit(api, "flaky", inputs)
    done = finished(api, job)
    got = {line["index"]: line for line in lines(api, job)}
    assert len(got) == 60
    invalid = got[4]
    assert invalid["status"] == "failed" and invalid["error"]["type"] == "ValidationError"
    assert "item 4" in invalid["error"]["message"] and invalid["attempts"] == 0
    for index, x in enumerate(inputs):
        line = got[index]
        if index == 4:
            continue
        if x in (13, 26):
            assert line["status"] == "failed" and line["error"]["type"] == "TimeLimitExceeded"
        elif x % 10 == 0:
            assert line["status"] == "failed" and line["error"]["type"] == "ValueError"
            assert line["attempts"] == 1 and f"{x} is a multiple of 10" in line["error"]["message"]
        elif x % 7 == 0:
            assert line["status"] == "succeeded" and line["attempts"] == 2, line
        else:
            assert line == {**line, "status": "succeeded", "output": x, "attempts": 1}
    failed = 1 + 2 + 6  # the string, 13 and 26, the multiples of 10
    assert done["status"] == "failed"
    assert done["counts"] == {
        "succeeded": 60 - failed,
        "failed": failed,
        "cancelled": 0,
        "expired": 0,
        "pending": 0,
    }
    # the failures are counted as single invocations' are
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for s in family.samples
    }
    labels = (("error_type", "ValueError"), ("function", "flaky"))
    assert samples[("conveyor_invocation_failures_total", labels)] == 6


def test_results_in_input_order_hold_back_behind_a_slow_item_not_the_rest(
    api: TestClient, stack: Stack
) -> None:  # type: ignore[type-arg]
    inputs = [{"i": 0, "sleep": 3.0}] + [{"i": i} for i in range(1, 200)]
    job = submit(api, "slow", inputs)
    first: list[float] = []

    def read() -> None:
        with api.stream("GET", job["results_url"]) as response:
            for _ in response.iter_lines():
                first.append(time.time())
                break

    reader = threading.Thread(target=read)
    reader.start()
    # The other worker process runs the later chunks while item 0 sleeps.
    wait_for(
        lambda: api.get(job["status_url"]).json()["counts"]["succeeded"] >= 100,
        30,
        "later items to finish while item 0 sleeps",
    )
    assert not first, "a line came before item 0 finished"
    assert lines(api, job, order="completion")[0]["index"] != 0
    reader.join(30)
    finished(api, job)
    in_order = lines(api, job)
    assert [line["index"] for line in in_order] == list(range(200))
    completion = lines(api, job, order="completion")
    assert sorted(line["index"] for line in completion) == list(range(200))
    assert completion.index(in_order[0]) > 50  # item 0 finished late
    # Resuming: from=N skips N lines of either order.
    assert lines(api, job, **{"from": 150}) == in_order[150:]
    assert lines(api, job, order="completion", **{"from": 42}) == completion[42:]
    assert lines(api, job, **{"from": 200}) == []


def test_a_status_long_poll_answers_at_the_next_change(api: TestClient) -> None:  # type: ignore[type-arg]
    job = submit(api, "slow", [{"i": i, "sleep": 0.3} for i in range(6)])
    seen = api.get(job["status_url"]).json()
    changed = api.get(job["status_url"], params={"wait": 30}).json()
    assert changed["counts"] != seen["counts"] or changed["status"] != seen["status"]
    assert finished(api, job)["status"] == "succeeded"


def test_cancel_starts_nothing_after_its_answer(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    starts = stack.root / "starts"
    starts.write_text("")
    job = submit(api, "slow", [{"i": i, "sleep": 0.02} for i in range(3000)])
    wait_for(lambda: len(starts.read_text().split()) > 100, 30, "the job to be under way")
    answer = api.post(f"{job['status_url']}/cancel")
    started_at_answer = len(starts.read_text().split())
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    time.sleep(1.5)  # anything still going would start items now
    assert len(starts.read_text().split()) == started_at_answer
    done = finished(api, job)
    counts = done["counts"]
    assert done["status"] == "cancelled" and counts["pending"] == 0
    assert counts["succeeded"] + counts["cancelled"] == 3000 and counts["cancelled"] > 0
    got = lines(api, job)
    assert [line["index"] for line in got] == list(range(3000))
    succeeded = [line for line in got if line["status"] == "succeeded"]
    assert len(succeeded) == counts["succeeded"] and all(
        line["output"] == line["index"] for line in succeeded
    )  # finished items keep their results
    assert api.post(f"{job['status_url']}/cancel").status_code == 409


def test_cancel_kills_an_item_that_is_running(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    starts = stack.root / "starts"
    starts.write_text("")
    job = submit(api, "slow", [{"i": 0, "sleep": 600}, {"i": 1, "sleep": 600}])
    wait_for(lambda: len(starts.read_text().split()) == 2, 30, "both items to run")
    answer = api.post(f"{job['status_url']}/cancel")
    assert answer.status_code == 200, answer.text
    done = finished(api, job, timeout=30)
    assert done["status"] == "cancelled" and done["counts"]["cancelled"] == 2
    assert {line["status"] for line in lines(api, job)} == {"cancelled"}
    # the worker replaced its killed processes and goes on serving
    status, body = invoke(api, "echo", 7, wait=30)
    assert status == 200 and body["output"] == 7


def test_single_invocations_interleave_with_a_running_job(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    job = submit(api, "slow", [{"i": i, "sleep": 0.005} for i in range(4000)])
    wait_for(lambda: api.get(job["status_url"]).json()["counts"]["succeeded"] > 50, 30)
    singles = [invoke(api, "slow", {"i": -1, "sleep": 0})[1]["id"] for _ in range(5)]
    outcomes = [result(api, "slow", i, wait=60) for i in singles]
    assert all(o["status"] == "succeeded" for o in outcomes)
    during = api.get(job["status_url"]).json()
    assert during["status"] == "running", "the singles waited for the whole job"
    finished(api, job)


def test_an_idempotency_key_makes_one_job(api: TestClient) -> None:  # type: ignore[type-arg]
    body = ndjson(list(range(100)))
    headers = {**NDJSON, "Idempotency-Key": "nightly-2026-11-22"}
    first = api.post("/functions/echo/map", content=body, headers=headers)
    again = api.post("/functions/echo/map", content=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = api.post("/functions/echo/map", content=ndjson([1]), headers=headers)
    assert other.status_code == 409 and first.json()["id"] in other.json()["detail"]
    ids = [j["id"] for j in api.get("/functions/echo/jobs").json()["jobs"]]
    assert ids.count(first.json()["id"]) == 1


def test_a_finished_job_expires_whole(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    job = submit(api, "flaky", [1, 2, 3])
    finished(api, job)
    client = stack.redis
    held = [k for k in client.scan_iter(f"*{job['id']}*")]
    assert held, "the job's keys are gone already"
    for key in held:
        assert 0 < client.ttl(key) <= 120, (key, client.ttl(key))  # flaky's [results] ttl


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b'{"inputs": []}', {}, 422, "no inputs"),
        (b'{"inputs": 3}', {}, 422, "inputs must be a list"),
        (b'{"inputs": [1], "extra": 1}', {}, 422, "extra: not allowed here"),
        (b'{"inputs": [1], "priority": 12}', {}, 422, "priority must be an integer from 0 to 9"),
        (b'{"inputs": [1], "priority": false}', {}, 422, "priority must be an integer from 0 to 9"),
        (b'{"inputs": [1, ', {}, 400, "not valid JSON"),
        (b"[1, 2]", {}, 422, "send a JSON object"),
        (b"1\n2\n{oops\n", NDJSON, 400, "line 3 of the body is not JSON"),
        (b"1\n", {"content-type": "text/csv"}, 415, "application/x-ndjson"),
        (b'{"inputs": [1], "webhook": {"url": "https://example.com"}}', {}, 422, "webhook"),
    ],
)
def test_bad_requests_say_what_to_fix_and_leave_no_job(  # type: ignore[no-untyped-def]
    api, body, headers, status, says
) -> None:
    before = api.get("/functions/echo/jobs").json()["jobs"]
    headers = {"content-type": "application/json", **headers}
    response = api.post("/functions/echo/map", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert api.get("/functions/echo/jobs").json()["jobs"] == before


def test_more_items_than_allowed_is_refused(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack("[map]\nmax_items = 100\n")
    write_function(stack.functions, "echo", ECHO, '[function]\nhandler = "handler:run"\n')
    with stack.api() as api:
        response = api.post("/functions/echo/map", content=ndjson(list(range(101))), headers=NDJSON)
        assert response.status_code == 413
        assert "more than 100 items ([map] max_items)" in response.json()["detail"]
        assert api.get("/functions/echo/jobs").json() == {"jobs": []}
        assert not list(stack.redis.scan_iter("conveyor:map:*"))
        unknown = api.post("/functions/nope/map", content=b"1\n", headers=NDJSON)
        assert unknown.status_code == 404
