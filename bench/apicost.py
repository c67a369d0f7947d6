"""Bench scenarios for issue 14's request path (bench/run.py builds the rows):

- API CPU per invocation: the throughput load (submit + ``GET result?wait``) against this
  API and against the API of :data:`BASELINE_REF` (the code before issue 14), both on the
  same Redis and worker, alternated; CPU from ``/proc/<pid>/stat`` (user + system) of the
  API process over the load, divided by the invocations.
- ``[api] workers = 2`` against 1: the same load's throughput, and the CPU of all API
  processes per invocation.

The baseline API is the platform package of that commit (``git archive``) on
``PYTHONPATH``, in this venv: it speaks the same Redis protocol as today's worker. Without
git history (a source tarball) the baseline row is skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tarfile
from collections.abc import Awaitable, Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from tests.support import child_pids, cpu_ticks

# main before issue 14's changes to the request path; BENCH_BASELINE=<ref> compares with
# another (before a change: its checks must cost under 3 %, the row's target then)
BASELINE_REF = os.environ.get("BENCH_BASELINE", "fbb763b")
BASELINE_TARGET = 0.5 if BASELINE_REF == "fbb763b" else 1.03
REPO = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all its threads; not of processes it started: pass
    each process) so far."""
    return cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")


def cpu_per_call(
    pids: list[int], load: Callable[[], Awaitable[dict[str, float]]], calls: int
) -> dict[str, float]:
    """Run ``load``; its result plus ``cpu_ms``: CPU of ``pids`` per call, in ms."""
    before = sum(cpu_seconds(p) for p in pids)
    result = asyncio.run(load())
    used = sum(cpu_seconds(p) for p in pids) - before
    return {**result, "cpu_ms": used / calls * 1000}


def baseline_platform(into: Path, ref: str = BASELINE_REF) -> Path | None:
    """The ``platform/`` folder of ``ref`` (:data:`BASELINE_REF`), unpacked under
    ``into``; None without git history."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "platform"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "platform"


def api_children(pid: int) -> list[int]:
    """The API processes of ``conveyor api`` with ``[api] workers = N``: uvicorn's
    supervisor and its N children."""
    return [pid, *child_pids(pid)]


def with_api_workers(config: Path, n: int) -> Path:
    """A copy of ``config`` whose ``[api]`` table says ``workers = n``."""
    copy = config.with_name(f"deploy-api{n}.toml")
    copy.write_text(config.read_text().replace("[api]\n", f"[api]\nworkers = {n}\n"))
    return copy


def env_with_path(platform: Path) -> dict[str, Any]:
    return {"PYTHONPATH": str(platform)}
