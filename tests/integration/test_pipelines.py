"""Pipelines, end to end: chains, fan-out and fan-in of deployed functions in real worker
processes, driven through the real app; a run advances in the script that ends its step's
last invocation, so nothing here polls for a step to start."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from conveyor.db import scripts
from tests.support import (
    Stack,
    cancel,
    invoke,
    result,
    wait_for,
    write_function,
    write_pipeline,
)

pytestmark = pytest.mark.integration

FN = '[function]\nhandler = "handler:run"\n'

DOUBLE = "def run(x: int) -> int:\n    return 2 * x\n"
INC = "def run(x: int) -> int:\n    print(f'adding one to {x}')\n    return x + 1\n"
SPLIT = """
from pydantic import BaseModel

class Parts(BaseModel):
    items: list[int]
    label: str

def run(n: int) -> Parts:
    return Parts(items=list(range(n)), label=f"{n} items")
"""
TOTAL = """
from pydantic import BaseModel

class Values(BaseModel):
    values: list[int]
    label: str
    top: int = 0

def run(x: Values) -> dict:
    return {"sum": sum(x.values), "label": x.label, "top": sorted(x.values)[-x.top:] if x.top else []}
"""
# Sleeps ``x["sleep"]`` seconds, fails for x["fail"] == x["i"], writes a marker per start.
SLOW = """
import time
from pathlib import Path

def run(x: dict) -> int:
    Path(x["dir"], f"start-{x['i']}").write_text("")
    if x["i"] == x.get("fail"):
        time.sleep(x.get("fail_after", 0))
        raise ValueError(f"item {x['i']} is bad")
    time.sleep(x.get("sleep", 0))
    Path(x["dir"], f"end-{x['i']}").write_text("")
    return x["i"]
"""

CHAIN = """
[function]
description = "double, add one, double"

[[steps]]
name = "first"
function = "double"

[[steps]]
name = "second"
function = "inc"

[[steps]]
name = "third"
function = "double"
"""

# Waits for a gate file, then returns its input's x.
GATE = """
import time
from pathlib import Path

def run(x: dict) -> int:
    while not Path(x["gate"]).exists():
        time.sleep(0.02)
    return x["x"]
"""
BATCHED = """
class Model:
    def predict_batch(self, xs: list[int]) -> list[dict]:
        return [{"x": 2 * x, "batch": len(xs)} for x in xs]
"""

FAN = """
[[steps]]
name = "split"
function = "split"

[[steps]]
name = "each"
function = "inc"
for_each = "$.steps.split.output.items"

[[steps]]
name = "total"
function = "total"
input = { values = "$.steps.each.output", label = "$.steps.split.output.label", top = 3 }
"""


SLOW_FAN = """
[[steps]]
name = "work"
function = "slow"
for_each = "$.input.items"
input = { i = "$.item", dir = "$.input.dir", fail = "$.input.fail", sleep = "$.input.sleep", fail_after = 0.3 }
on_error = "ERROR"
"""

FROZEN = """
[[steps]]
name = "gate"
function = "gate"

[[steps]]
name = "double"
function = "double"
"""

NESTED = """
[pipeline]
output = "$.steps.fans.output"

[[steps]]
name = "chain"
function = "chain"
input = "$.input.n"

[[steps]]
name = "fans"
function = "fan"
for_each = "$.input.sizes"
"""

LOOSE = """
[[steps]]
name = "same"
function = "same"

[[steps]]
name = "each"
function = "inc"
for_each = "$.steps.same.output"
"""

BATCH_FAN = """
[[steps]]
name = "each"
function = "batched"
for_each = "$.input"
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    for name, code in (("double", DOUBLE), ("inc", INC), ("split", SPLIT), ("total", TOTAL)):
        write_function(stack.functions, name, code, FN)
    write_function(stack.functions, "slow", SLOW, FN + "[limits]\ntimeout = 60\n")
    write_function(stack.functions, "gate", GATE, FN)
    write_function(
        stack.functions,
        "batched",
        BATCHED,
        '[function]\nhandler = "handler:Model"\n[batching]\nmax_batch_size = 8\nmax_wait_ms = 50\n',
    )
    write_pipeline(stack.functions, "chain", CHAIN)
    write_pipeline(stack.functions, "fan", FAN)
    write_pipeline(stack.functions, "slowfan", SLOW_FAN.replace("ERROR", "fail"))
    write_pipeline(stack.functions, "skipfan", SLOW_FAN.replace("ERROR", "skip"))
    write_pipeline(stack.functions, "frozen", FROZEN)
    write_pipeline(stack.functions, "nested", NESTED)
    write_pipeline(stack.functions, "batchfan", BATCH_FAN)
    write_function(stack.functions, "same", "def run(x):\n    return x\n", FN)
    write_pipeline(stack.functions, "loose", LOOSE)
    stack.worker("--queues", "default", "--concurrency", "4")
    return stack


def run(api: TestClient, name: str, payload: Any, wait: float = 30) -> dict[str, Any]:  # type: ignore[type-arg]
    status, body = invoke(api, name, payload)
    assert status == 202, body
    return result(api, name, body["id"], wait=wait)


def test_a_chain_runs_its_steps_in_order(api: TestClient) -> None:  # type: ignore[type-arg]
    done = run(api, "chain", 5)
    assert done["status"] == "succeeded", done
    assert done["output"] == 22
    assert [s["name"] for s in done["steps"]] == ["first", "second", "third"]
    assert [s["status"] for s in done["steps"]] == ["succeeded"] * 3
    first = done["steps"][0]["invocations"][0]
    assert first == f"{done['id']}.first"
    step = result(api, "double", first)
    assert step["status"] == "succeeded" and step["output"] == 10


def test_a_fan_out_and_fan_in(api: TestClient) -> None:  # type: ignore[type-arg]
    done = run(api, "fan", 50, wait=60)
    assert done["status"] == "succeeded", done
    assert done["output"] == {"sum": sum(range(1, 51)), "label": "50 items", "top": [48, 49, 50]}
    each = done["steps"][1]
    assert len(each["invocations"]) == 50 and each["for_each"] is True


def test_a_fan_out_over_1000_elements_with_a_fan_in(api: TestClient) -> None:  # type: ignore[type-arg]
    done = run(api, "fan", 1000, wait=60)
    assert done["status"] == "succeeded", done
    assert done["output"]["sum"] == sum(range(1, 1001))
    assert done["output"]["top"] == [998, 999, 1000]
    each = done["steps"][1]
    assert each["invocations"][999] == f"{done['id']}.each.999"
    assert each["attempts"] == 1000
    assert result(api, "inc", each["invocations"][7])["output"] == 8


def test_an_empty_fan_out_gives_an_empty_list_at_once(api: TestClient) -> None:  # type: ignore[type-arg]
    done = run(api, "fan", 0)
    assert done["status"] == "succeeded", done
    assert done["output"] == {"sum": 0, "label": "0 items", "top": []}
    assert done["steps"][1]["invocations"] == []


def test_a_pipeline_is_a_step_of_another_with_its_own_fan_out(api: TestClient) -> None:  # type: ignore[type-arg]
    done = run(api, "nested", {"n": 3, "sizes": [2, 5, 0]}, wait=60)
    assert done["status"] == "succeeded", done
    assert done["output"] == [
        {"sum": 3, "label": "2 items", "top": [1, 2]},
        {"sum": 15, "label": "5 items", "top": [3, 4, 5]},
        {"sum": 0, "label": "0 items", "top": []},
    ]
    assert done["steps"][0]["invocations"] == [f"{done['id']}.chain"]
    inner = result(api, "chain", f"{done['id']}.chain")
    assert inner["output"] == 14 and [s["status"] for s in inner["steps"]] == ["succeeded"] * 3
    second = result(api, "fan", f"{done['id']}.fans.1")
    assert second["steps"][1]["invocations"][0] == f"{done['id']}.fans.1.each.0"


def test_a_for_each_over_a_batching_function_fills_batches(api: TestClient) -> None:  # type: ignore[type-arg]
    done = run(api, "batchfan", list(range(40)), wait=60)
    assert done["status"] == "succeeded", done
    assert [o["x"] for o in done["output"]] == [2 * x for x in range(40)]
    assert max(o["batch"] for o in done["output"]) > 1


def test_a_failing_element_fails_the_run_at_once_and_cancels_its_siblings(
    api: TestClient,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    payload = {"items": list(range(6)), "dir": str(tmp_path), "fail": 3, "sleep": 30}
    done = run(api, "slowfan", payload, wait=20)
    assert done["status"] == "failed", done
    error = done["error"]
    assert error["type"] == "ValueError" and error["step"] == "work" and error["index"] == 3
    assert "item 3 is bad" in error["message"] and error["message"].startswith("step work [3]")
    ids = done["steps"][0]["invocations"]
    siblings = [result(api, "slow", ids[i]) for i in (0, 1, 2, 4, 5)]
    assert {s["status"] for s in siblings} == {"cancelled"}
    time.sleep(1)  # a killed sibling would have finished its sleep by now? no: 30 s
    assert not list(tmp_path.glob("end-*")), "a cancelled sibling ran to its end"


def test_on_error_skip_gives_null_and_the_run_goes_on(api: TestClient, tmp_path: Path) -> None:  # type: ignore[type-arg]
    payload = {"items": [0, 1, 2], "dir": str(tmp_path), "fail": 1, "sleep": 0}
    done = run(api, "skipfan", payload)
    assert done["status"] == "succeeded", done
    assert done["output"] == [0, None, 2]


def test_a_step_that_selects_no_list_fails_the_run_saying_why(api: TestClient) -> None:  # type: ignore[type-arg]
    done = run(api, "loose", 7)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "ForEachError" and done["error"]["step"] == "each"
    assert "$.steps.same.output is a number, not a list" in done["error"]["message"]
    assert run(api, "loose", [1, 2])["output"] == [2, 3]
    typed = api.post("/functions/slowfan/invoke", json={"input": {"items": 7}})
    assert typed.status_code == 422 and "input.items" in typed.text  # typed by its steps


def test_cancel_reaches_every_running_step(api: TestClient, tmp_path: Path) -> None:  # type: ignore[type-arg]
    payload = {"items": [0, 1], "dir": str(tmp_path), "sleep": 30, "fail": -1}
    status, body = invoke(api, "slowfan", payload)
    assert status == 202
    wait_for(lambda: len(list(tmp_path.glob("start-*"))) == 2, 30, "both items started")
    answer = cancel(api, "slowfan", body["id"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    for i in (0, 1):
        assert result(api, "slow", f"{body['id']}.work.{i}")["status"] == "cancelled"
    done = result(api, "slowfan", body["id"])
    assert done["steps"][0]["status"] == "cancelled"


def test_a_run_keeps_the_versions_it_was_accepted_with(
    stack: Stack,
    api: TestClient,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    status, body = invoke(api, "frozen", {"gate": str(gate), "x": 7})
    assert status == 202
    before = api.get("/functions/double").json()["version"]
    write_function(stack.functions, "double", "def run(x: int) -> int:\n    return 3 * x\n", FN)
    wait_for(
        lambda: api.get("/functions/double").json()["version"] != before, 30, "double redeployed"
    )
    gate.write_text("go")
    done = result(api, "frozen", body["id"])
    assert done["status"] == "succeeded" and done["output"] == 14, done
    assert done["steps"][1]["version"] == before
    assert run(api, "frozen", {"gate": str(gate), "x": 7})["output"] == 21
    write_function(stack.functions, "double", DOUBLE, FN)
    wait_for(lambda: api.get("/functions/double").json()["version"] == before, 30, "restored")


def test_a_pipeline_answers_like_any_function(stack: Stack, api: TestClient) -> None:  # type: ignore[type-arg]
    headers = {"Idempotency-Key": "pipeline-once"}
    first = api.post("/functions/chain/invoke", json={"input": 1}, headers=headers).json()
    again = api.post("/functions/chain/invoke", json={"input": 1}, headers=headers).json()
    assert again["id"] == first["id"]
    waited = api.post("/functions/chain/invoke", json={"input": 2}, params={"wait": 20})
    assert waited.status_code == 200 and waited.json()["output"] == 10
    bad = api.post("/functions/chain/invoke", json={"input": "two"})
    assert bad.status_code == 422, bad.text
    schema = api.get("/schema").json()
    assert "/functions/chain/invoke" in schema["paths"]
    described = api.get("/functions/fan").json()
    assert described["input_schema"]["type"] == "integer"
    assert described["output_schema"]["type"] == "object"
    done = result(api, "chain", first["id"])
    logs = api.get(f"/functions/chain/results/{first['id']}/logs").json()["logs"]
    assert logs == f"--- second ({first['id']}.second)\nadding one to 2\n"
    assert [s["for_each"] for s in described["steps"] if "for_each" in s] == [
        "$.steps.split.output.items"
    ]
    metrics = api.get("/metrics").text
    assert 'conveyor_invocations_total{function="chain",status="succeeded"}' in metrics
    deleted = api.delete(f"/functions/chain/results/{done['id']}")
    assert deleted.status_code == 204
    assert api.get(f"/functions/chain/results/{done['id']}").status_code == 404
    assert not stack.redis.exists(f"conveyor:run:{done['id']}")


JSON_PATH = """--! include pipelines/json
local found, why = json_path(ARGV[1], cjson.decode(ARGV[2]))
if not found then return {0, why} end
return {1, found}
"""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\/[]{},: \n\té€😀'), max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='ab"\\[]{}.é', max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


def _select(value: Any, path: list[str | int]) -> tuple[bool, Any]:
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or not -len(value) <= part < len(value):
                return False, None
        elif not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


@settings(max_examples=300, deadline=None)
@given(
    value=json_values,
    path=st.lists(st.integers(-3, 3) | st.text(alphabet='ab"\\[]{}.é', max_size=3), max_size=3),
    indent=st.sampled_from([None, 1]),
)
def test_a_selection_keeps_the_text_it_selects(
    stack: Stack, value: Any, path: list[str | int], indent: int | None
) -> None:
    """The scripts select from JSON text without decoding it (Redis' cjson would change
    numbers and empty lists): what they select is what Python selects, to the digit."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    source = scripts._resolve(JSON_PATH, set())
    found, selected = stack.redis.eval(source, 0, text, json.dumps(path))
    ok, expected = _select(value, path)
    assert bool(found) == ok, (text, path, selected)
    if ok:
        assert json.loads(selected) == expected
        if isinstance(expected, int | float) or expected == []:
            assert selected.strip() == json.dumps(expected, indent=indent, ensure_ascii=False)


def test_a_map_job_over_a_pipeline_runs_each_item(api: TestClient) -> None:  # type: ignore[type-arg]
    inputs: list[Any] = [*range(300), "bad"]
    answer = api.post("/functions/chain/map", json={"inputs": inputs})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    wait_for(
        lambda: (
            api.get(job["status_url"], params={"wait": 5}).json()["status"] == "succeeded"
            or api.get(job["status_url"]).json()["status"] == "failed"
        ),
        60,
        "the job to finish",
    )
    status = api.get(job["status_url"]).json()
    counts = status["counts"]
    assert (counts["succeeded"], counts["failed"], status["total"]) == (300, 1, 301), status
    lines = [json.loads(line) for line in api.get(job["results_url"]).text.splitlines()]
    assert [line["index"] for line in lines] == list(range(301))
    assert [line["output"] for line in lines[:300]] == [4 * x + 2 for x in range(300)]
    assert lines[300]["status"] == "failed" and "item 300" in lines[300]["error"]["message"]
    run = result(api, "chain", f"{job['id']}.7")
    assert run["output"] == 30 and [s["status"] for s in run["steps"]] == ["succeeded"] * 3


def test_cancelling_a_map_job_over_a_pipeline_cancels_its_runs(
    api: TestClient,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    item = {"items": [0], "dir": str(tmp_path), "sleep": 30, "fail": -1}
    answer = api.post("/functions/slowfan/map", json={"inputs": [item, item]})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    wait_for(lambda: len(list(tmp_path.glob("start-*"))) >= 1, 30, "a run under way")
    cancelled = api.post(f"/functions/slowfan/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    wait_for(lambda: api.get(job["status_url"]).json()["finished_at"] is not None, 30, "job ended")
    status = api.get(job["status_url"]).json()
    assert status["status"] == "cancelled" and status["counts"]["cancelled"] == 2, status
    assert result(api, "slowfan", f"{job['id']}.0")["status"] == "cancelled"


def test_a_broken_pipeline_keeps_its_last_good_version_serving(
    stack: Stack,
    api: TestClient,  # type: ignore[type-arg]
) -> None:
    folder = write_pipeline(stack.functions, "later", CHAIN.replace('"inc"', '"double"'))
    good = wait_for(
        lambda: (b := api.get("/functions/later").json()).get("status") == "ready" and b,
        30,
        "later deployed",
    )
    (folder / "function.toml").write_text(CHAIN.replace('"inc"', '"missing"'))
    broken = wait_for(
        lambda: (b := api.get("/functions/later").json()).get("error") and b, 30, "the error"
    )
    assert broken["version"] == good["version"] and broken["status"] == "error"
    assert (
        "function.toml: [[steps]] 'second': function 'missing' is not deployed" in (broken["error"])
    )
    assert run(api, "later", 1)["output"] == 8  # the good version still serves
    (folder / "function.toml").write_text(CHAIN)
    wait_for(lambda: api.get("/functions/later").json().get("status") == "ready", 30, "fixed")
    assert run(api, "later", 1)["output"] == 6


def test_a_step_on_a_queue_nobody_serves_says_so(
    stack: Stack,
    api: TestClient,  # type: ignore[type-arg]
) -> None:
    write_function(stack.functions, "idle", DOUBLE, FN + '[queue]\nname = "batch"\n')
    write_pipeline(stack.functions, "waits", CHAIN.replace('"inc"', '"idle"'))
    wait_for(lambda: api.get("/functions/waits").json().get("status") == "ready", 30, "waits")
    status, body = invoke(api, "waits", 1)
    assert status == 202
    assert "step second: no live worker consumes queue 'batch'" in body["warning"], body
    cancel(api, "waits", body["id"])
