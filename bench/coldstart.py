"""Cold start in `make bench` (bench/run.py builds the rows; `BENCH_ONLY=coldstart` runs
them alone): from `conveyor worker` starting to the first result of an invocation that was
waiting for it, for iris and for the transformer; and, with `--autoscale 0,1` (nothing
running until work comes), the first invocation's latency. Each against the model's own
load time: a plain Python process importing the handler and running `setup()`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import Process, conveyor, wait_for

HERE = Path(__file__).resolve().parent


def model_load(folder: Path, handler: str) -> float:
    """Seconds for a fresh Python process to import the handler and set it up."""
    module, _, attribute = handler.partition(":")
    code = (
        "import importlib, sys; sys.path.insert(0, sys.argv[1]);"
        f" m = importlib.import_module({folder.name + '.' + module!r});"
        f" h = getattr(m, {attribute!r})(); getattr(h, 'setup', lambda: None)()"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(folder.parent)], check=True)
    return time.perf_counter() - start


def first_result(
    base: str, config: Path, log: Path, call: tuple[str, Any], *worker_args: str
) -> float:
    """Queue one invocation (function, input), start the worker, and time its start to
    the result."""
    function, payload = call
    with httpx.Client(base_url=base, timeout=120) as client:
        accepted = client.post(f"/functions/{function}/invoke", json={"input": payload})
        assert accepted.status_code == 202, accepted.text
        start = time.perf_counter()
        worker = Process(conveyor("worker", *worker_args), config, log)
        try:
            done = client.get(accepted.json()["result_url"], params={"wait": 60}).json()
            assert done["status"] == "succeeded", done
            return time.perf_counter() - start
        finally:
            worker.stop()


def autoscaled_first_result(
    base: str, config: Path, log: Path, *, queue: str, function: str = "embed", payload: Any = "hi"
) -> float:
    """With `--autoscale 0,1` already running (no worker process), one invocation's
    latency: the supervisor sees it, starts a process, which sets up and runs it."""
    supervisor = Process(conveyor("worker", "--queues", queue, "--autoscale", "0,1"), config, log)
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            wait_for(
                lambda: client.get(f"/functions/{function}").json().get("autoscaled"),
                30,
                "the autoscaler's heartbeat",
            )
            start = time.perf_counter()
            done = client.post(
                f"/functions/{function}/invoke", params={"wait": 60}, json={"input": payload}
            ).json()
            assert done["status"] == "succeeded", done
            return time.perf_counter() - start
    finally:
        supervisor.stop()
