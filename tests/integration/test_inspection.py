"""What the inspector learns about a version is shared through Redis: a restarted API (or a
second one) serves known versions without inspecting them again."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support import copy_examples, free_port, start_api

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
    report(
        f"inspection: iris {inspected['iris']['duration_ms']:.0f} ms, echo"
        f" {inspected['echo']['duration_ms']:.0f} ms; a restarted API read both from Redis"
    )
