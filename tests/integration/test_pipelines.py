"""Pipelines, end to end: chains, fan-out and fan-in of deployed functions in real worker
processes, driven through the real app; a run advances in the script that ends its step's
last invocation, so nothing here polls for a step to start."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support import Stack, cancel, invoke, result, wait_for, write_function

pytestmark = pytest.mark.integration

FN = '[function]\nhandler = "handler:run"\n'

DOUBLE = "def run(x: int) -> int:\n    return 2 * x\n"
INC = "def run(x: int) -> int:\n    return x + 1\n"
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


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    for name, code in (("double", DOUBLE), ("inc", INC), ("split", SPLIT), ("total", TOTAL)):
        write_function(stack.functions, name, code, FN)
    write_function(stack.functions, "slow", SLOW, FN + "[limits]\ntimeout = 60\n")
    write_pipeline(stack.functions, "chain", CHAIN)
    write_pipeline(stack.functions, "fan", FAN)
    stack.worker("--queues", "default", "--concurrency", "4")
    return stack


def write_pipeline(root: Path, name: str, manifest: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "function.toml").write_text(manifest)
    return folder


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
