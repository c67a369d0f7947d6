"""Input that a Redis script cannot take never leaves half a step: it is refused before
anything is written (a 422 naming the field or the line), or, where it comes from a
handler's output, taken as data by the scripts, so every run ends ``succeeded`` or
``failed`` and never stays queued or running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from conveyor.db import scripts
from conveyor.db.connections import broker_errors
from conveyor.errors import BrokerUnavailableError, RedisCommandError
from tests.support import Stack, result, write_function, write_pipeline

pytestmark = pytest.mark.integration

FN = '[function]\nhandler = "handler:run"\n'
SAME = "def run(x):\n    return x\n"
# The input is JSON text: whatever it holds (a lone surrogate, 1e400) reaches the scripts
# as a step's output, past the API's checks.
PARSE = """
import json

def run(text: str):
    return json.loads(text)
"""

POISON = """
[pipeline]
output = "$.steps.last.output"

[[steps]]
name = "parse"
function = "parse"

[[steps]]
name = "pick"
function = "same"
input = { v = "$.steps.parse.output.v", steps = "$.steps.parse.output.steps", first = "$.steps.parse.output.list[0]" }

[[steps]]
name = "each"
function = "same"
for_each = "$.steps.parse.output.list"

[[steps]]
name = "streams"
function = "streamed"
for_each = "$.steps.parse.output.list"

[[steps]]
name = "last"
function = "same"
input = { pick = "$.steps.pick.output", each = "$.steps.each.output", streams = "$.steps.streams.output" }
"""

# Over the input: the run's own selectors read the caller's JSON.
DIRECT = """
[[steps]]
name = "pick"
function = "same"
input = { v = "$.input.v", k = "$.input.keys" }
"""

# A streaming step: each element an invocation of its own.
STREAMED = "def run(x):\n    yield x\n"


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    write_function(stack.functions, "same", SAME, FN)
    write_function(stack.functions, "parse", PARSE, FN)
    write_function(stack.functions, "streamed", STREAMED, FN)
    write_pipeline(stack.functions, "poison", POISON)
    write_pipeline(stack.functions, "direct", DIRECT)
    stack.worker("--queues", "default", "--concurrency", "4")
    return stack


def raw_post(api: TestClient, path: str, text: bytes, **headers: str) -> Any:  # type: ignore[type-arg]
    return api.post(path, content=text, headers={"content-type": "application/json", **headers})


def test_a_lone_surrogate_in_a_key_is_refused_before_anything_is_written(
    stack: Stack,
    api: TestClient,  # type: ignore[type-arg]
) -> None:
    keys_before = stack.redis.dbsize()
    body = rb'{"input": {"\ud800": 1, "v": 2}}'
    answer = raw_post(api, "/functions/direct/invoke", body, **{"Idempotency-Key": "poison-1"})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["errors"][0]["field"].startswith("input.")
    assert "surrogate" in problem["detail"]
    assert stack.redis.dbsize() == keys_before  # nothing half-written
    again = raw_post(api, "/functions/direct/invoke", body, **{"Idempotency-Key": "poison-1"})
    assert again.status_code == 422  # not a 202 for a run that never runs
    for bad in (rb'{"input": {"v": "\udc00x"}}', rb'{"input": {"v": 1e400}}'):
        answer = raw_post(api, "/functions/direct/invoke", bad)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["errors"][0]["field"] == "input.v"


def test_a_map_line_that_lua_cannot_take_is_refused_naming_it(
    api: TestClient,  # type: ignore[type-arg]
) -> None:
    lines = [json.dumps({"v": i, "keys": []}).encode() for i in range(300)]
    lines[250] = rb'{"v": "\ud800", "keys": []}'
    answer = api.post(
        "/functions/direct/map",
        content=b"\n".join(lines),
        headers={"content-type": "application/x-ndjson"},
    )
    assert answer.status_code == 422, answer.text
    assert "item 250 (line 251)" in answer.json()["detail"]
    listed = api.post(
        "/functions/direct/map",
        content=b'{"inputs": [{"v": 1, "keys": []}, {"v": "\\ud800", "keys": []}]}',
        headers={"content-type": "application/json"},
    )
    assert listed.status_code == 422, listed.text
    assert "item 1" in listed.json()["detail"]


def test_an_output_no_json_reader_takes_fails_its_step_and_ends_the_run(
    api: TestClient,  # type: ignore[type-arg]
) -> None:
    text = json.dumps({"\ud800": 1, "v": 2, "steps": "s", "list": [{"\udc00": 1}, 2]})
    answer = api.post("/functions/poison/invoke", json={"input": text})
    assert answer.status_code == 202, answer.text
    done = result(api, "poison", answer.json()["id"], wait=30)
    assert done["status"] == "failed", done
    assert done["error"]["step"] == "parse" and "serial" in done["error"]["message"], done


JSON_PATH = """--! include pipelines/json
local found, why = json_path(ARGV[1], cjson.decode(ARGV[2]))
if not found then return {0, why} end
return {1, found}
"""


def test_the_scripts_select_past_members_cjson_cannot_decode(stack: Stack) -> None:
    """Text written by anything but Python's encoder (an older record, another client) is
    taken as data: a member name cjson refuses is no selector's, and the rest is found."""
    source = scripts._resolve(JSON_PATH, set())
    text = r'{"\ud800": {"v": 1}, "a\udc00b": 2, "v": [1e400, {"\ud800": 3}]}'
    assert stack.redis.eval(source, 0, text, '["v", 0]') == [1, "1e400"]
    assert stack.redis.eval(source, 0, text, '["v", 1, "x"]')[0] == 0
    assert stack.redis.eval(source, 0, text, '["w"]') == [0, ".w: no such key"]


def test_a_map_job_over_a_pipeline_with_a_poison_item_past_its_first_chunks_ends(
    api: TestClient,  # type: ignore[type-arg]
) -> None:
    items = [json.dumps({"v": i, "steps": 0, "list": [i]}) for i in range(40)]
    items[30] = json.dumps({"\ud800": 1, "v": 30, "steps": 0, "list": [{"\ud800": 2}]})
    answer = api.post("/functions/poison/map", json={"inputs": items})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    status: dict[str, Any] = {}
    for _ in range(60):
        status = api.get(job["status_url"], params={"wait": 5}).json()
        if status.get("finished_at"):
            break
    assert status.get("finished_at"), status  # ended: the poison item failed alone
    assert (status["counts"]["succeeded"], status["counts"]["failed"]) == (39, 1), status


# JSON as a handler might return it: surrogates, escapes, deep lists, huge numbers, and key
# names that are the selectors' own words.
KEYS = st.sampled_from(["v", "list", "steps", "input", "output", "item", "\ud800", "a\\b", '"'])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec=None, categories=["Cs", "Ll", "Po", "Cc"]), max_size=6)
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
TEXTS = st.one_of(
    st.dictionaries(KEYS, DOCS, max_size=5).map(json.dumps),
    DOCS.map(json.dumps),
    st.sampled_from(['{"v": 1e400, "list": [1e999]}', '{"list": ' + "[" * 40 + "]" * 40 + "}"]),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=TEXTS)
def test_every_document_through_every_selector_ends_the_run(
    api: TestClient,  # type: ignore[type-arg]
    text: str,
) -> None:
    answer = api.post("/functions/poison/invoke", json={"input": text})
    assert answer.status_code == 202, answer.text
    done = result(api, "poison", answer.json()["id"], wait=30)
    assert done["status"] in ("succeeded", "failed"), done


def test_a_script_error_is_not_an_unreachable_redis(tmp_path: Path) -> None:
    """The API tells a failed script from a Redis that is down."""
    client = redis.Redis(unix_socket_path=str(tmp_path / "none.sock"))
    with pytest.raises(BrokerUnavailableError), broker_errors():
        client.ping()
    del client
    with pytest.raises(RedisCommandError), broker_errors():
        raise redis.ResponseError("user_script:1: Expected value but found invalid unicode escape")
