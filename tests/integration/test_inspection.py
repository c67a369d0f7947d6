"""What the inspector learns about a version is shared through Redis: a restarted API (or a
second one) serves known versions without inspecting or storing them again, and two API
processes meeting a new version at once store it once."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support import Process, conveyor, copy_examples, free_port, start_api, wait_for

pytestmark = pytest.mark.integration


def test_a_restarted_api_reads_schemas_from_redis(  # type: ignore[no-untyped-def]
    make_stack, report: Callable[[str], None]
) -> None:
    stack = make_stack()
    copy_examples(stack.functions, "iris", "echo")
    first, _ = start_api(stack.config, stack.root / "api-1.log", free_port())
    first.stop()
    inspected = {e["function"]: e for e in first.events() if e.get("event") == "function_inspected"}
    assert set(inspected) == {"iris", "echo"}

    second, _ = start_api(stack.config, stack.root / "api-2.log", free_port())
    second.stop()
    events = second.events()
    assert not [e for e in events if e.get("event") == "function_inspected"]
    cached = {e["function"] for e in events if e.get("event") == "function_schemas_cached"}
    assert cached == {"iris", "echo"}
    deployed = sorted(
        e["function"] for e in first.events() if e.get("event") == "function_deployed"
    )
    assert deployed == ["echo", "iris"]
    assert not [e for e in events if e.get("event") == "function_deployed"]

    # A new version met by two API processes at the same moment: one deploy, one bundle.
    (stack.functions / "echo" / "handler.py").write_text("def echo(x):\n    return [x]\n")
    ports = [free_port(), free_port()]
    both = [
        Process(conveyor("api", "--port", str(port)), stack.config, stack.root / f"api-{port}.log")
        for port in ports
    ]
    for port in ports:
        ready = f"http://127.0.0.1:{port}/readyz"
        wait_for(lambda ready=ready: httpx.get(ready).status_code == 200, 30, "both APIs")
    for api in both:
        api.stop()
    new = [e for api in both for e in api.events() if e.get("event") == "function_deployed"]
    assert [e["function"] for e in new] == ["echo"], new
    assert len(stack.redis.keys("conveyor:bundle:echo:*")) == 2  # the first version, and this
    report(
        f"inspection: iris {inspected['iris']['duration_ms']:.0f} ms, echo"
        f" {inspected['echo']['duration_ms']:.0f} ms; a restarted API read both from Redis"
    )
