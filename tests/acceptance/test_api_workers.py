"""``[api] workers = 2``: two API processes on one port, started as a user starts them. Every
request may land on either; long-polling, hot reload and removal work whichever answers."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import (
    Stack,
    child_pids,
    cpu_ticks,
    free_port,
    start_api,
    wait_for,
    write_function,
)

pytestmark = pytest.mark.acceptance

SLOW = "import time\ndef run(x: int) -> int:\n    time.sleep(0.3)\n    return x * 2\n"
HELLO = 'def run(x: str) -> str:\n    return "{word} " + x\n'
TOML = '[function]\nhandler = "handler:run"\n'


def _api_processes(pid: int) -> list[int]:
    """The uvicorn worker processes under the parent (not multiprocessing's helpers)."""
    return [c for c in child_pids(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _fresh() -> httpx.Client:
    """A client that opens a new connection per request: the kernel spreads them."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)


def _everywhere(base: str, check: Callable[[httpx.Response], bool], path: str) -> None:
    """``check`` holds for 30 requests in a row on fresh connections."""
    with _fresh() as client:

        def all_agree() -> bool:
            return all(check(client.get(base + path)) for _ in range(30))

        wait_for(all_agree, 20, f"every API process to agree on {path}")


def test_two_api_processes_share_the_port(make_stack, report: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", workers=2)
    write_function(stack.functions, "slow", SLOW, TOML)
    stack.worker("--queues", "default", "--concurrency", "2")
    api, base = start_api(stack.config, stack.root / "api.log", free_port())
    try:
        processes = wait_for(
            lambda: len(_api_processes(api.pid)) == 2 and _api_processes(api.pid), 30
        )
        # start_api saw one process ready; the other may still be reading the store
        _everywhere(base, lambda r: r.json().get("status") == "ready", "/functions/slow")
        before = {pid: cpu_ticks(pid) for pid in processes}

        # Submitted on one connection, waited for on another: each process's waiters are
        # woken by its own subscription, whoever stored the result.
        with _fresh() as client:
            for i in range(20):
                accepted = client.post(base + "/functions/slow/invoke", json={"input": i})
                assert accepted.status_code == 202, accepted.text
                done = client.get(base + accepted.json()["result_url"], params={"wait": 30})
                assert done.json()["status"] == "succeeded" and done.json()["output"] == 2 * i
            for _ in range(200):
                assert client.get(base + "/functions").status_code == 200
        busy = [pid for pid in processes if cpu_ticks(pid) > before[pid]]
        assert len(busy) == 2, "one API process answered everything"

        # Hot reload, seen by both: a new function, a new version of it, its removal.
        write_function(stack.functions, "hello", HELLO.format(word="hi"), TOML)
        _everywhere(base, lambda r: r.json().get("status") == "ready", "/functions/hello")
        first = httpx.get(base + "/functions/hello").json()["version"]
        write_function(stack.functions, "hello", HELLO.format(word="hey"), TOML)
        _everywhere(
            base, lambda r: r.json().get("version") not in (None, first), "/functions/hello"
        )
        with _fresh() as client:
            for _ in range(10):
                done = client.post(
                    base + "/functions/hello/invoke", params={"wait": 30}, json={"input": "x"}
                )
                assert done.json()["output"] == "hey x"
        shutil.rmtree(stack.functions / "hello")
        _everywhere(base, lambda r: r.status_code == 404, "/functions/hello")

        deployed = [
            e
            for e in api.events()
            if e.get("event") == "function_deployed" and e["function"] == "hello"
        ]
        report(
            f"2 API processes both answered (CPU ticks {before} before, then"
            f" {[cpu_ticks(p) for p in processes]}); 20 submit/wait pairs across them; 2"
            f" versions of hello deployed {len(deployed)} times (the other process found"
            " each in the store)"
        )
        assert len(deployed) == 2
    finally:
        api.stop()
