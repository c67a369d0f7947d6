"""What the fault tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support import Process, Stack, free_port, start_api


@pytest.fixture
def apis() -> Iterator[Callable[[Stack], tuple[Process, str]]]:
    """Start `conveyor api` processes for a stack; all are stopped at the end."""
    started: list[Process] = []

    def start(stack: Stack) -> tuple[Process, str]:
        proc, base = start_api(stack.config, stack.root / f"api-{len(started)}.log", free_port())
        started.append(proc)
        return proc, base

    yield start
    for proc in started:
        proc.stop()
