"""A function folder whose import goes wrong never hurts the API or the other functions.

The API runs as a user runs it (``conveyor api``, its own process) with a worker. Each case
drops a broken folder and, at the same moment, a valid one; the test prints what the API
answered about the broken one and how long the valid one took to be invokable."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    Process,
    Stack,
    free_port,
    rss_mib,
    start_api,
    wait_for,
    wait_until,
    write_function,
)

pytestmark = pytest.mark.faults

MANIFEST = '[function]\nhandler = "handler:run"\n'
RUN = "\ndef run(x: int) -> int:\n    return x + 1\n"
TIMEOUT = 3  # [functions] inspect_timeout in this stack
MEMORY = 256  # [functions] inspect_memory, MiB

CASES = {
    "hangs": (
        "import time\ntime.sleep(600)\n",
        f"importing bad-hangs/handler.py did not finish within {TIMEOUT} s",
    ),
    "sys-exit": (
        "import sys\nsys.exit(1)\n",
        "bad-sys-exit/handler.py exited with status 1 while being imported",
    ),
    "os-exit": (
        "import os\nos._exit(1)\n",
        "bad-os-exit/handler.py exited with status 1 while being imported",
    ),
    "segfault": (
        "import ctypes\nctypes.string_at(0)\n",
        "bad-segfault/handler.py crashed (SIGSEGV) while being imported (at bad-segfault/handler.py:2)",
    ),
    "raises": (
        "raise ValueError('weights.pt is missing')\n",
        "importing bad-raises/handler.py raised ValueError: weights.pt is missing (at bad-raises/handler.py:1)",
    ),
    "recursion": (
        "def down(n):\n    return down(n + 1)\ndown(0)\n",
        "importing bad-recursion/handler.py raised RecursionError: maximum recursion depth exceeded (at bad-recursion/handler.py:2)",
    ),
    "memory": (
        "blob = bytearray(1024 * 1024 * 1024)\n",
        f"importing bad-memory/handler.py allocated more than {MEMORY} MiB",
    ),
}


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("functions", inspect_timeout=TIMEOUT, inspect_memory=MEMORY)
    stack.worker("--queues", "default")
    return stack


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[tuple[Process, str]]:
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    yield proc, base
    proc.stop()


def get(base: str, name: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{base}/functions/{name}", timeout=10).json()  # type: ignore[no-any-return]


def invoked(base: str, name: str, value: int) -> bool:
    response = httpx.post(
        f"{base}/functions/{name}/invoke?wait=10", json={"input": value}, timeout=20
    )
    return response.status_code == 200 and response.json()["output"] == value + 1


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_import_is_a_listed_error(
    case: str, stack: Stack, api: tuple[Process, str], report: Callable[[str], None]
) -> None:
    proc, base = api
    code, expected = CASES[case]
    bad, good = f"bad-{case}", f"ok-{case}"
    started = time.monotonic()
    write_function(stack.functions, bad, code + RUN, MANIFEST)
    write_function(
        stack.functions, good, f"# {case}: a folder of its own, inspected afresh\n" + RUN, MANIFEST
    )
    wait_until(lambda: get(base, good), lambda f: f["status"] == "ready", 10, f"{good} listed")
    listed = time.monotonic() - started
    wait_until(lambda: invoked(base, good, 1), bool, 20, f"{good} invoked")
    served = time.monotonic() - started
    if case == "hangs":
        assert get(base, bad)["status"] == "loading"  # while its inspection runs
    broken = wait_until(lambda: get(base, bad), lambda f: f["status"] == "error", 20, bad)
    assert expected in broken["error"], broken["error"]
    assert broken["version"] is None
    refused = httpx.post(f"{base}/functions/{bad}/invoke", json={"input": 1})
    assert refused.status_code == 503 and "no good version" in refused.json()["detail"]
    assert proc.proc.poll() is None and invoked(base, good, 2)  # the API and its functions go on
    report(
        f"{case}: API answered status={broken['status']!r} error={broken['error']!r};"
        f" a valid folder dropped in at the same moment was listed after {listed:.2f} s"
        f" and served its first invocation after {served:.2f} s"
    )


def test_last_good_version_serves_while_a_newer_one_is_broken(
    stack: Stack, api: tuple[Process, str], report: Callable[[str], None]
) -> None:
    _, base = api
    folder = write_function(stack.functions, "flip", RUN, MANIFEST)
    good = wait_until(lambda: get(base, "flip"), lambda f: f["status"] == "ready", 10, "flip")
    assert invoked(base, "flip", 4)  # the worker's process has this version now
    (folder / "handler.py").write_text("import os\nos._exit(3)\n" + RUN)
    broken = wait_until(lambda: get(base, "flip"), lambda f: f["status"] == "error", 20, "broken")
    assert "exited with status 3" in broken["error"] and broken["version"] == good["version"]
    assert broken["error_version"] != good["version"]
    assert invoked(base, "flip", 5)  # the last good version, in the worker's process
    report(f"broken newer version reported ({broken['error']!r}); version {good['version']} serves")


def test_a_handler_importing_torch_leaves_the_api_without_torch(
    make_stack, report: Callable[[str], None]
) -> None:  # type: ignore[no-untyped-def]
    # its own stack: importing torch takes this machine up to 4 s, past the 3 s limit of
    # the module's (the default limit, 60 s, as a user has it)
    stack: Stack = make_stack()
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 60, "the API")
        before = rss_mib(proc.pid)
        write_function(stack.functions, "torchy", "import torch\n" + RUN, MANIFEST)
        torchy = wait_until(
            lambda: get(base, "torchy"),
            lambda f: f.get("status") in ("ready", "error"),
            60,
            "torchy",
        )
        assert torchy["status"] == "ready", torchy
        after = rss_mib(proc.pid)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.stop()
    assert "libtorch" not in maps and after - before < 30, (before, after)
    report(
        f"API RSS with a torch-importing handler deployed: before {before:.0f} MiB, after {after:.0f} MiB; no libtorch mapped"
    )
