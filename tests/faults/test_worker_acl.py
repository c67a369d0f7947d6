"""Workers reach Redis as an ACL user (``[redis] worker_username``): a real Redis whose
default user needs a password, a worker that runs as the user ``conveyor redis --acl``
describes, and a handler that goes looking for the worker's connection in its memory. It
gets NOPERM for the API keys and for writes to the function store, and cannot log in as
the platform; meanwhile everything a worker does (single invocations, a retry, a batch,
a map job) works under those rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.db.acl import acl_rules
from tests.support import RedisServer, Stack, invoke, result, wait_for, write_function

pytestmark = pytest.mark.faults

SNOOP = """
import gc
import redis

def run(x: int) -> dict:
    found = [o for o in gc.get_objects() if isinstance(o, redis.Redis)]
    client = found[0]
    tries = {
        "write api keys": lambda: client.hset("conveyor:api-keys", "forged", "{}"),
        "read api keys": lambda: client.hgetall("conveyor:api-keys"),
        "read key secrets": lambda: client.hgetall("conveyor:api-key-webhook-secrets"),
        "write what serves": lambda: client.hset("conveyor:serving", "echo", "0" * 12),
        "write a bundle": lambda: client.rpush("conveyor:bundle:echo:x", "evil"),
        "flush": lambda: client.flushall(),
        "as the platform": lambda: redis.Redis(port=client.connection_pool.connection_kwargs["port"]).hgetall("conveyor:api-keys"),
        "read what serves": lambda: client.hgetall("conveyor:serving"),
    }
    outcome = {}
    for name, attempt in tries.items():
        try:
            attempt()
            outcome[name] = "allowed"
        except redis.RedisError as exc:
            outcome[name] = f"{type(exc).__name__}: {exc}"
    return {"clients": len(found), "outcome": outcome}
"""
FLAKY = """
from conveyor import context

def run(x: int) -> int:
    if context.current().attempt == 1:
        raise RuntimeError("once")
    return x
"""
BATCHED = """
class Double:
    def predict_batch(self, xs: list[int]) -> list[int]:
        return [x * 2 for x in xs]
"""
TOML = '[function]\nhandler = "handler:run"\n'
WORDS = """
from conveyor import TextStream, context
def run(n: int) -> TextStream:
    for i in range(n):
        print("word", i)
        context.current().progress(i + 1, n)
        yield f"w{i} "
"""


LEARN = """
from conveyor import context
def run(x: int) -> int:
    return x
def train(x: int) -> dict:
    ctx = context.current()
    (ctx.checkpoint_dir / "state").write_text(str(x))
    ctx.checkpoint()
    (ctx.output_dir / "weights.txt").write_text(str(x))
    return {"x": x}
"""


STEPS = """
[[steps]]
name = "first"
function = "flaky"
input = "$.input[0]"

[[steps]]
name = "each"
function = "double"
for_each = "$.input"

[[steps]]
name = "last"
function = "flaky"
input = "$.steps.first.output"
"""


def test_a_handler_with_the_workers_connection_gets_noperm(
    tmp_path: Path, report: Callable[[str], None]
) -> None:
    root = tmp_path / "acl"
    server = RedisServer(root / "redis", password="platform-secret").start(
        "--requirepass", "platform-secret"
    )
    stack = Stack(root, server)
    stack.set_settings("redis", worker_username='"worker"', worker_password='"worker-secret"')
    try:
        server.client().execute_command("ACL", "SETUSER", "worker", *acl_rules(stack.settings()))
        write_function(stack.functions, "snoop", SNOOP, TOML)
        write_function(
            stack.functions, "flaky", FLAKY,
            TOML + '[retries]\nmax = 1\nbackoff = 0.2\non = ["RuntimeError"]\n',
        )  # fmt: skip
        write_function(
            stack.functions, "double", BATCHED,
            '[function]\nhandler = "handler:Double"\n[batching]\nmax_batch_size = 4\nmax_wait_ms = 50\n',
        )  # fmt: skip
        write_function(stack.functions, "words", WORDS, TOML)
        write_function(
            stack.functions, "limited", "def run(x: int) -> int:\n    return x\n",
            TOML + '[limits]\nconcurrency = 1\nrate = "50/s"\nmax_queued = 100\nmax_queue_time = 60\n',
        )  # fmt: skip
        write_function(
            stack.functions, "learn", LEARN, TOML + '[training]\nhandler = "handler:train"\n'
        )
        (stack.functions / "steps").mkdir()
        (stack.functions / "steps" / "function.toml").write_text(STEPS)
        worker = stack.worker("--queues", "default", "--concurrency", "2")
        with stack.api() as api:
            status, snooped = invoke(api, "snoop", 1, wait=30)
            assert status == 200 and snooped["status"] == "succeeded", snooped
            outcome = snooped["output"]["outcome"]
            report(f"a handler with the worker's connection: {json.dumps(outcome)}")
            for denied in (
                "write api keys",
                "read api keys",
                "read key secrets",
                "write what serves",
                "write a bundle",
                "flush",
            ):
                assert outcome[denied].startswith("NoPermissionError"), (denied, outcome)
            assert outcome["as the platform"].startswith("AuthenticationError"), outcome
            assert outcome["read what serves"] == "allowed"
            # Everything a worker does, under those rules.
            status, retried = invoke(api, "flaky", 5, wait=30)
            assert retried["status"] == "succeeded" and retried["attempts"] == 2, retried
            accepted = [invoke(api, "double", n)[1]["id"] for n in range(6)]
            assert [result(api, "double", i)["output"] for i in accepted] == [0, 2, 4, 6, 8, 10]
            status, streamed = invoke(api, "words", 4, wait=30)  # chunks, lines, progress
            assert streamed["output"] == "w0 w1 w2 w3 ", streamed
            whole = api.get(streamed["stream_url"]).text
            assert whole.count("event: output") == 4 and "event: log" in whole, whole
            job = api.post("/functions/double/map", json={"inputs": list(range(50))})
            assert job.status_code == 202, job.text
            wait_for(lambda: api.get(job.json()["status_url"]).json()["status"] == "succeeded", 30)
            # a pipeline: a step retried, a fan-out (a map job) over a batching function
            status, ran = invoke(api, "steps", [1, 2, 3], wait=30)
            assert status == 200 and ran["output"] == 1, ran
            assert result(api, "double", f"{ran['id']}.each.2")["output"] == 6
            # limits: slots, turns, the waiting set and deadlines, under these rules
            limited = [invoke(api, "limited", n)[1]["id"] for n in range(6)]
            assert [result(api, "limited", i)["output"] for i in limited] == list(range(6))
            # a training: a checkpoint saved, its version made (by the API, not the worker)
            started = api.post("/functions/learn/trainings", json={"input": 3, "promote": True})
            assert started.status_code == 202, started.text
            trained = result(api, "learn", started.json()["id"])
            assert trained["status"] == "succeeded" and trained["checkpoint"], trained
            assert trained["output"]["metrics"] == {"x": 3}, trained
        assert server.client().hget("conveyor:api-keys", "forged") is None
        log = worker.log.read_text()
        assert "NOPERM" not in log, [line for line in log.splitlines() if "NOPERM" in line][:5]
    finally:
        stack.close()
