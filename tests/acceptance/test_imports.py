"""What `conveyor worker` and `conveyor api` import (issue 14: a worker imports nothing it
does not need). Each starts as a user starts it, with ``PYTHONPROFILEIMPORTTIME=1``, so its
log lists every module the process imported; no function is deployed, so the worker's pool
child imports no user code either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Stack, free_port, start_api, start_worker

pytestmark = pytest.mark.acceptance

IMPORT_TIME = {"PYTHONPROFILEIMPORTTIME": "1"}
# Client-only (httpx, tqdm), celery's command line (click-repl and prompt-toolkit for
# `celery shell`, Flower and Tornado through its entry point), models (torch, numpy), and
# each side's counterpart.
NEVER = {"httpx", "tqdm", "click_repl", "prompt_toolkit", "flower", "tornado", "torch", "numpy"}
NOT_IN_WORKER = NEVER | {"litestar", "uvicorn", "jsonschema_rs", "aiohttp"}
NOT_IN_API = NEVER  # (celery, which builds the messages, brings billiard along)


def modules(log: Path) -> set[str]:
    """The modules a process imported, from ``-X importtime``'s lines."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("import time:") and "cumulative" not in line
    }


def imported(log: Path) -> set[str]:
    """Top-level packages a process imported."""
    return {name.split(".")[0] for name in modules(log)}


@pytest.fixture(scope="module")
def stack(make_stack) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    yield make_stack()


def test_a_worker_imports_only_what_it_runs_with(stack: Stack) -> None:
    log = stack.root / "worker-imports.log"
    proc = start_worker(
        stack.config, log, "--queues", "default", "--concurrency", "1",
        redis_client=stack.redis, env=IMPORT_TIME,
    )  # fmt: skip
    stack.workers.append(proc)
    names = imported(log)
    assert {"celery", "kombu", "redis", "conveyor"} <= names  # the log does list imports
    assert not names & NOT_IN_WORKER, sorted(names & NOT_IN_WORKER)


def test_the_api_imports_only_what_it_serves_with(stack: Stack) -> None:
    log = stack.root / "api-imports.log"
    proc, _ = start_api(stack.config, log, free_port(), env=IMPORT_TIME)
    stack.workers.append(proc)
    names = imported(log)
    assert {"litestar", "uvicorn", "redis", "conveyor"} <= names
    assert not names & NOT_IN_API, sorted(names & NOT_IN_API)
    worker_side = sorted(m for m in modules(log) if m.startswith("conveyor.worker"))
    assert not worker_side, worker_side  # nor the worker's side of the house
