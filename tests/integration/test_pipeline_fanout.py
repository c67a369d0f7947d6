"""A pipeline's fan-out is bounded work: a for_each step has at most ``[pipelines]
max_fanout`` elements (refused at the door when the list is the caller's, failing the run
when a step made it), its elements over a streaming function or a pipeline start a window
at a time (each one's end starts the next, so a cancel has a window to stop), and a run
counts against its key's limits as the elements it starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support import Stack, make_key, wait_for, write_function, write_pipeline

pytestmark = pytest.mark.integration

FN = '[function]\nhandler = "handler:run"\n'
WINDOW, MAX_FANOUT = 4, 50
# A streaming function: each element an invocation of its own; writes when it starts.
STREAMED = """
import time
from pathlib import Path

def run(x: dict):
    Path(x["dir"], f"start-{{x['i']}}").write_text("")
    time.sleep(x.get("sleep", 0))
    yield x["i"] * 2
"""
SPLIT = "def run(n: int) -> list[int]:\n    return list(range(n))\n"

OVER_INPUT = """
[[steps]]
name = "each"
function = "streamed"
for_each = "$.input.items"
input = { i = "$.item", dir = "$.input.dir", sleep = "$.input.sleep" }
"""
OVER_STEP = """
[[steps]]
name = "split"
function = "split"

[[steps]]
name = "each"
function = "plain"
for_each = "$.steps.split.output"
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.config.write_text(
        stack.config.read_text() + f"[pipelines]\nmax_fanout = {MAX_FANOUT}\nwindow = {WINDOW}\n"
    )
    stack.set_settings("api", auth='"keys"')
    write_function(stack.functions, "streamed", STREAMED.format(), FN)
    write_function(stack.functions, "split", SPLIT, FN)
    write_function(stack.functions, "plain", "def run(x: int) -> int:\n    return x\n", FN)
    write_pipeline(stack.functions, "fan", OVER_INPUT)
    write_pipeline(stack.functions, "made", OVER_STEP)
    stack.worker("--queues", "default", "--concurrency", "4")
    return stack


@pytest.fixture(scope="module")
def admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(stack, 'root', 'admin')}"}


def run(api: TestClient, name: str, body: Any, headers: dict[str, str]) -> Any:  # type: ignore[type-arg]
    return api.post(f"/functions/{name}/invoke", json={"input": body}, headers=headers)


def test_a_list_past_max_fanout_in_the_input_is_refused_before_anything_is_stored(
    stack: Stack,
    api: TestClient,  # type: ignore[type-arg]
    admin: dict[str, str],
    tmp_path: Path,
) -> None:
    def runs() -> set[str]:
        return set(stack.redis.scan_iter("conveyor:run:*")) | set(
            stack.redis.scan_iter("conveyor:job:*")
        )

    before = runs()
    body = {"items": list(range(MAX_FANOUT + 1)), "dir": str(tmp_path), "sleep": 0}
    answer = run(api, "fan", body, admin)
    assert answer.status_code == 422, answer.text
    error = answer.json()["errors"][0]
    assert error["field"] == "input.items" and "max_fanout (50)" in error["message"], error
    assert runs() == before


def test_a_step_output_past_max_fanout_fails_the_run_naming_it(
    api: TestClient,  # type: ignore[type-arg]
    admin: dict[str, str],
) -> None:
    answer = run(api, "made", MAX_FANOUT + 5, admin)
    assert answer.status_code == 202, answer.text
    done = api.get(
        f"/functions/made/results/{answer.json()['id']}", params={"wait": 30}, headers=admin
    ).json()
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "ForEachError" and "max_fanout (50)" in done["error"]["message"]
    fine = run(api, "made", MAX_FANOUT, admin)
    ok = api.get(
        f"/functions/made/results/{fine.json()['id']}", params={"wait": 30}, headers=admin
    ).json()
    assert ok["status"] == "succeeded" and ok["output"] == list(range(MAX_FANOUT)), ok


def test_elements_start_a_window_at_a_time_and_a_cancel_stops_the_window(
    stack: Stack,
    api: TestClient,  # type: ignore[type-arg]
    admin: dict[str, str],
    tmp_path: Path,
) -> None:
    quick = run(
        api, "fan", {"items": list(range(20)), "dir": str(tmp_path), "sleep": 0}, admin
    ).json()
    done = api.get(
        f"/functions/fan/results/{quick['id']}", params={"wait": 30}, headers=admin
    ).json()
    assert done["status"] == "succeeded" and done["output"] == [[2 * i] for i in range(20)], done
    slow = tmp_path / "slow"
    slow.mkdir()
    body = {"items": list(range(40)), "dir": str(slow), "sleep": 30}
    accepted = run(api, "fan", body, admin).json()
    wait_for(lambda: len(list(slow.glob("start-*"))) >= WINDOW, 30, "a window under way")
    time.sleep(0.5)
    made = [f"{accepted['id']}.each.{i}" for i in range(40)]
    exist = sum(stack.redis.exists(f"conveyor:job:{i}") for i in made)
    assert exist == WINDOW, exist  # the rest wait as elements, not as invocations
    cancelled = api.post(f"/functions/fan/results/{accepted['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200, cancelled.text
    ended = api.get(
        f"/functions/fan/results/{accepted['id']}", params={"wait": 30}, headers=admin
    ).json()
    assert ended["status"] == "cancelled", ended
    statuses = {stack.redis.hget(f"conveyor:job:{i}", "status") for i in made[:WINDOW]}
    assert statuses == {"cancelled"}, statuses
    time.sleep(1)
    assert len(list(slow.glob("start-*"))) == WINDOW  # nothing more started


def test_a_run_counts_against_its_key_as_the_elements_it_starts(
    stack: Stack,
    api: TestClient,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    key = make_key(stack, "counted", "invoke:*", options=("--daily", "12"))
    headers = {"Authorization": f"Bearer {key}"}
    first = run(api, "fan", {"items": list(range(8)), "dir": str(tmp_path), "sleep": 0}, headers)
    assert first.status_code == 202, first.text  # 1 run + 8 elements: 9 of 12
    second = run(api, "fan", {"items": list(range(3)), "dir": str(tmp_path), "sleep": 0}, headers)
    assert second.status_code == 429 and second.json()["limit"] == "daily", second.text
    # a fan-out a step makes counts as it starts: 1 + 2 elements, 12 of 12
    third = run(api, "made", 2, headers)
    assert third.status_code == 202, third.text
    api.get(f"/functions/made/results/{third.json()['id']}", params={"wait": 30}, headers=headers)
    me = api.get("/keys/me", headers=headers).json()
    assert me["usage"]["today"] == 12, me
