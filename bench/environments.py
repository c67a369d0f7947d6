"""Functions' own environments in the bench (issue: each function its own Python
environment), each figure against the platform's environment on the same run:

- deploy → first answer of a function whose environment must be built (resolved by the
  API, built, its module inspected in it, its worker process started; uv's cache already
  holds the packages), against the same function without requirements;
- a worker process's start (its first heartbeat) in an already-built environment, against
  one in the platform's interpreter;
- echo's throughput in its own environment against the same echo without one.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx
import redis

from conveyor.environments.build import Environments
from conveyor.environments.resolve import resolve
from tests.support import Process

REQUIREMENTS = "iniconfig==1.1.1\n"  # small, and no package the platform has
# one lock per measured first answer: a version each, so each deploy meets a new environment
VERSIONS = ("2.0.0", "2.1.0", "1.1.0", "1.0.1", "1.0.0")
ECHO = "def echo(x):\n    return x\n"
MANIFEST = '[function]\nhandler = "handler:echo"\n[queue]\nname = "default"\n'


def write_echo(functions: Path, name: str, requirements: str | None) -> Path:
    folder = functions / name
    folder.mkdir()
    (folder / "handler.py").write_text(ECHO)
    (folder / "function.toml").write_text(MANIFEST)
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


def warm_uv_cache(uv_cache: Path, scratch: Path, runs: int) -> None:
    """Put the packages of the measured environments in uv's cache (built elsewhere), so
    the deploys measured build from the cache as a machine that has seen them does."""
    for version in VERSIONS[:runs]:
        lock = resolve([f"iniconfig=={version}"], uv_cache)
        Environments(scratch, uv_cache).ensure(lock.id, lock.text)
    shutil.rmtree(scratch, ignore_errors=True)


def first_answer(base: str, functions: Path, own: bool, runs: int) -> float:
    """Median seconds from a new folder to its first answer; ``own``: with requirements
    of a lock this machine has not built (its packages in uv's cache)."""
    seconds = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(runs):
            name = f"{'env' if own else 'plain'}{i}-{time.monotonic_ns()}"
            requirements = f"iniconfig=={VERSIONS[i % len(VERSIONS)]}\n" if own else None
            started = time.perf_counter()
            folder = write_echo(functions, name, requirements)
            while True:
                answer = client.post(
                    f"/functions/{name}/invoke", params={"wait": 5}, json={"input": i}
                )
                if answer.status_code == 200 and answer.json().get("output") == i:
                    break
                time.sleep(0.01)
            seconds.append(time.perf_counter() - started)
            shutil.rmtree(folder)
    return statistics.median(seconds)


def environment_of(base: str, name: str) -> str:
    with httpx.Client(base_url=base, timeout=30) as client:
        while not (found := client.get(f"/functions/{name}").json().get("environment")):
            time.sleep(0.05)
    return str(found)


def start_seconds(
    config: Path,
    log: Path,
    python: str,
    url: str,
    runs: int,
    *extra: str,
    env: dict[str, str] | None = None,
) -> float:
    """Median seconds from ``python -m conveyor worker`` to its first heartbeat (``env``:
    as a worker starts an environment's process, its bytecode where it keeps it)."""
    client = redis.Redis.from_url(url)
    seconds = []
    for i in range(runs):
        name = f"start-{i}-{time.monotonic_ns()}"
        args = [python, "-m", "conveyor", "worker", "--queues", "default", "--name", name]
        started = time.perf_counter()
        proc = Process([*args, *extra], config, log, env)
        try:
            while not client.exists(f"conveyor:worker:{name}"):
                assert proc.proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.01)
            seconds.append(time.perf_counter() - started)
        finally:
            proc.stop()
    client.close()
    return statistics.median(seconds)


def platform_python() -> str:
    return sys.executable


def heartbeat_queues(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    beats = [client.get(f"conveyor:worker:{n}") for n in client.smembers("conveyor:workers")]
    return sorted(q for b in beats if b for q in json.loads(b)["queues"])
