"""JSON nesting is bounded before anything recursive reads it: the text check the API
makes before parsing, and the value check the worker makes before pydantic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.errors import TooDeepError, ValidationError
from conveyor.nesting import check_text, check_value
from conveyor.runtime import Runner
from tests.support import load, write_function


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b"[{}]", 2),
        (b'{"a": [1, {"b": []}], "c": {}}', 4),
        (b'["[[[[[[", {"k": "]]]]\\"[[["}]', 2),  # brackets inside strings do not count
        (b"[" * 10 + b"]" * 10, 10),
        (b"{[{[{}]}]}", 5),
    ],
)
def test_text_depth_is_exact(text: bytes, depth: int) -> None:
    check_text(text, max(depth, 1))
    if depth > 1:
        with pytest.raises(TooDeepError, match="max_json_depth"):
            check_text(text, depth - 1)


def test_a_30000_level_body_is_refused_without_recursing() -> None:
    body = ('{"children":[' * 30_000 + "{}" + "]}" * 30_000).encode()
    with pytest.raises(TooDeepError, match="more than 64 levels"):
        check_text(body, 64)
    with pytest.raises(TooDeepError):
        check_text(b"[" * 100_000, 64)  # never closed: refused all the same
    check_text(json.dumps([[i, "[[["] for i in range(10_000)]).encode(), 64)


def test_values_are_checked_iteratively() -> None:
    value: list[object] = []
    for _ in range(100_000):  # deeper than Python could recurse
        value = [value]
    with pytest.raises(TooDeepError):
        check_value(value, 64)
    check_value(json.loads("[" * 64 + "]" * 64), 64)
    with pytest.raises(TooDeepError):
        check_value(json.loads("[" * 65 + "]" * 65), 64)


def test_the_worker_refuses_deep_input_before_pydantic(tmp_path: Path) -> None:
    folder = write_function(
        tmp_path,
        "tree",
        "from pydantic import BaseModel\nclass Node(BaseModel):\n    children: list['Node'] = []\n"
        "def run(node: Node) -> int:\n    return len(node.children)\n",
        '[function]\nhandler = "handler:run"\n',
    )
    fn = load(folder)
    node: dict[str, object] = {}
    for _ in range(10_000):
        node = {"children": [node]}
    with pytest.raises(ValidationError, match="max_json_depth") as caught:
        Runner(64).run(fn, node)
    assert caught.value.errors[0]["field"] == "input"
    assert Runner(64).run(fn, {"children": [{}, {}]}) == "2"
