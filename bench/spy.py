"""Where the time goes under load: CPU per invocation of each process, from /proc, and
py-spy profiles of the API and the worker's processes (issue 14).

    python -m bench.spy echo|embed|embed-nobatch [N]    (`make profile` runs all three)

Starts the bench's platform (its own Redis, API and one worker process), warms the
function, then runs N invocations (submit + ``GET result?wait``) from 32 (echo) or 64
(the real model) HTTP clients: once measured from ``/proc/<pid>/stat``, then again for as
long as ``py-spy record`` samples (6 s; it slows what it samples). Prints the CPU table, then for each
profiled process its samples by the library that was running (innermost frame) and the
heaviest stacks; the raw profiles stay in ``bench/profiles/`` (collapsed stacks, for
flamegraph.pl or speedscope).
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "profiles"
os.environ["CONVEYOR_LOG__LEVEL"] = "warning"

from bench.apicost import cpu_seconds  # noqa: E402
from bench.embed import OFFLINE, sentence  # noqa: E402
from bench.run import BIN, Platform, _http_load  # noqa: E402
from tests.support import child_pids  # noqa: E402

OWNERS = ("redis/", "conveyor/", "litestar/", "uvicorn/", "celery/", "kombu/", "billiard/",
          "torch/", "transformers/", "sentence_transformers/", "prometheus_client/", "msgspec/",
          "pydantic")  # fmt: skip


def owner(stack: str) -> str:
    """The library of the innermost frame that belongs to one (the event loop otherwise)."""
    for frame in reversed(stack.split(";")):
        where = frame.rsplit("(", 1)[-1]
        for name in OWNERS:
            if name in where:
                return name.rstrip("/")
    return "event loop, threads, other"


# Innermost frames of threads that wait (py-spy counts some idle threads as active):
# heartbeat and lease threads, epoll, thread pools' idle workers, tqdm's monitor.
WAITS = ("Condition.wait (", "_epoll.poll (", "WorkerThread.run (", "_worker (")


def summarize(path: Path, top: int = 8) -> None:
    by_owner: collections.Counter[str] = collections.Counter()
    stacks: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack.rsplit(";", 1)[-1].startswith(WAITS):
            continue
        by_owner[owner(stack)] += int(count)
        stacks[" < ".join(f.split(" (")[0] for f in reversed(stack.split(";")[-4:]))] += int(count)
    total = sum(by_owner.values()) or 1
    print(f"\n{path.name}: {total} samples (idle waits left out)")
    for name, n in by_owner.most_common():
        print(f"  {n / total:6.1%}  {name}")
    print("  heaviest stacks (innermost first):")
    for stack, n in stacks.most_common(top):
        print(f"  {n / total:6.1%}  {stack[:150]}")


def main() -> None:
    name = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else (2000 if name == "echo" else 1000)
    clients = 32 if name == "echo" else 64
    queues = "realtime,default" if name == "echo" else "batch"
    make = (lambda i: i) if name == "echo" else sentence
    os.environ.update(OFFLINE)
    OUT.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="conveyor-profile-"))
    env = Platform(root)
    try:
        worker = env.worker("--queues", queues, "--concurrency", "1")
        asyncio.run(_http_load(env.base, name, make, 200, 8))  # set-up, first batches
        pids = {
            "api": env.api.pid,
            "worker parent": worker.pid,
            "worker child": child_pids(worker.pid)[0],
            "redis": env.redis.proc.pid,
            "load generator": os.getpid(),
        }
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        start = time.perf_counter()
        result = asyncio.run(_http_load(env.base, name, make, n, clients))
        elapsed = time.perf_counter() - start
        print(f"{name}: {result['rate']:.1f}/s, p50 {result['p50']:.1f} ms, {n} invocations")
        print(f"{'process':16} {'CPU ms/invocation':>18} {'share of a core':>16}")
        for k, p in pids.items():
            used = cpu_seconds(p) - before[k]
            print(f"{k:16} {used / n * 1000:18.2f} {used / elapsed:16.0%}")
        spies = {}
        for k in ("api", "worker parent", "worker child"):
            path = OUT / f"{name}-{k.replace(' ', '-')}.txt"
            spies[path] = subprocess.Popen(
                [str(BIN / "py-spy"), "record", "-p", str(pids[k]), "-d", "6", "-r", "200",
                 "-f", "raw", "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        while any(spy.poll() is None for spy in spies.values()):  # load for as long as they record
            asyncio.run(_http_load(env.base, name, make, n // 4, clients))
        for path, spy in spies.items():
            spy.wait()
            if path.exists():
                summarize(path)
    finally:
        env.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
