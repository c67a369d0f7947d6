"""`make soak`: mixed load on the real processes for SOAK_SECONDS (default 600), a worker
SIGKILLed and replaced every minute; Redis is a primary, a replica and three sentinels
(append-only, as the Procfile runs it; `[redis] min_replicas = 1`): a third of the way in
the replica is restarted, two thirds in the primary is SIGKILLed (a failover; it comes back
5 s later as a replica). Then every accepted invocation is checked. Exits 1 if any is lost.

Figures: accepted, succeeded, failed visibly (by error type), lost, executed twice (a
handler that ran to completion more than once for one invocation), and how many were
attempted more than once (declared retries, and attempts whose worker was killed).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import redis.sentinel

from tests.support import (
    Process,
    RedisServer,
    Sentinels,
    free_port,
    start_api,
    start_worker,
    write_function,
    write_settings,
)

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "40"))  # invocations per second offered
KILL_EVERY = float(os.environ.get("SOAK_KILL_EVERY", "60"))

RECORD = """
def record(ids):
    with open({runs!r}, "a") as f:
        f.write("".join(i + "\\n" for i in ids))
"""


def deploy(functions: Path, runs: Path) -> None:
    common = RECORD.format(runs=str(runs))
    write_function(
        functions,
        "quick",
        common
        + """
import random, time
from conveyor import context
def run(x: int) -> int:
    time.sleep(random.uniform(0, 0.02))
    record([context.current().id])
    return x
""",
        '[function]\nhandler = "handler:run"\n[queue]\nname = "realtime"\n[limits]\ntimeout = 5\n',
    )
    write_function(
        functions,
        "flaky",
        common
        + """
import random
from conveyor import context
def run(x: int) -> int:
    if random.random() < 0.3:
        raise RuntimeError("flaky")
    record([context.current().id])
    return x
""",
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 5\n'
        '[retries]\nmax = 2\nbackoff = 0.2\non = ["RuntimeError"]\n',
    )
    write_function(
        functions,
        "broken",
        common
        + """
from conveyor import context
def run(x: int) -> int:
    raise ValueError("always")
""",
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 5\n',
    )
    write_function(
        functions,
        "slow",
        common
        + """
import time
from conveyor import context
def run(x: int) -> int:
    time.sleep(0.5)
    record([context.current().id])
    return x
""",
        '[function]\nhandler = "handler:run"\n[queue]\nname = "batch"\n[limits]\ntimeout = 5\n',
    )
    write_function(
        functions,
        "batched",
        common
        + """
import time
from conveyor import context
class Model:
    def predict_batch(self, xs: list[int]) -> list[int]:
        time.sleep(0.01)
        record([c.id for c in context.batch()])
        return [x * 2 for x in xs]
""",
        '[function]\nhandler = "handler:Model"\n[queue]\nname = "batch"\n[limits]\ntimeout = 5\n'
        "[batching]\nmax_batch_size = 16\nmax_wait_ms = 20\n",
    )


FUNCTIONS = ["quick", "quick", "quick", "flaky", "broken", "slow", "batched", "batched"]


async def load(base: str, until: float, accepted: list[str], refused: Counter[int]) -> None:
    async with aiohttp.ClientSession(base) as client:

        async def one(i: int) -> None:
            name = random.choice(FUNCTIONS)
            body = {"input": i, "priority": random.randint(0, 9)}
            try:
                async with client.post(f"/functions/{name}/invoke", json=body) as r:
                    if r.status == 202:
                        accepted.append((await r.json())["id"])
                    else:
                        refused[r.status] += 1
            except aiohttp.ClientError:
                refused[0] += 1

        tasks, i = set(), 0
        while time.time() < until:
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(1 / RATE)
        await asyncio.gather(*tasks)


def settle(client: Any, accepted: list[str], patience: float = 60) -> set[str]:
    """Wait until every accepted invocation is final, or nothing finishes for ``patience``
    seconds; return those still unfinished."""
    pending, progress = set(accepted), time.time()
    while pending and time.time() - progress < patience:
        for invocation_id in list(pending):
            status = client.hget(f"conveyor:job:{invocation_id}", "status")
            if status in ("succeeded", "failed", "cancelled"):
                pending.discard(invocation_id)
                progress = time.time()
        time.sleep(1)
    return pending


def main() -> int:  # noqa: PLR0915 - one scenario, read top to bottom
    root = Path(tempfile.mkdtemp(prefix="conveyor-soak-"))
    cluster = Sentinels(root / "redis")  # append-only, fsync every second
    functions, runs = root / "functions", root / "runs"
    deploy(functions, runs)
    config = write_settings(root / "deploy.toml", cluster.primary.url, functions)
    text = config.read_text().replace("[worker]\n", "[worker]\nvisibility_timeout = 10\n")
    redis_lines = cluster.settings() + "min_replicas = 1\n"
    config.write_text(text.replace("[redis]\n", "[redis]\n" + redis_lines))
    os.environ["CONVEYOR_LOG__LEVEL"] = "warning"
    sentinels = [("127.0.0.1", port) for port in cluster.ports]
    client = redis.sentinel.Sentinel(sentinels).master_for(  # type: ignore[no-untyped-call]
        cluster.MASTER, decode_responses=True
    )
    api, base = start_api(config, root / "api.log", free_port())
    workers: list[Process] = [
        start_worker(config, root / f"worker-{n}.log", "--concurrency", "2", redis_client=client)
        for n in range(2)
    ]
    accepted: list[str] = []
    refused: Counter[int] = Counter()
    started = time.time()
    events: list[str] = []

    def standby() -> RedisServer:
        primary = cluster.current_primary_port()
        return cluster.replica if cluster.primary.port == primary else cluster.primary

    async def chaos() -> None:
        restarted = failed_over = False
        kills = 0
        while time.time() < started + SECONDS:
            await asyncio.sleep(min(KILL_EVERY, started + SECONDS - time.time()))
            if time.time() >= started + SECONDS:
                break
            victim = workers.pop(0)
            victim.kill(signal.SIGKILL)
            kills += 1
            events.append(f"{time.time() - started:.0f}s: SIGKILL worker pid {victim.pid}")
            workers.append(
                await asyncio.to_thread(
                    start_worker,
                    config,
                    root / f"worker-r{kills}.log",
                    "--concurrency",
                    "2",
                    redis_client=client,
                )
            )
            if not restarted and time.time() > started + SECONDS / 3:
                restarted = True
                replica = standby()
                replica.stop()
                events.append(f"{time.time() - started:.0f}s: Redis replica stopped")
                await asyncio.sleep(3)
                await asyncio.to_thread(replica.start)
                events.append(f"{time.time() - started:.0f}s: Redis replica started")
            elif not failed_over and time.time() > started + 2 * SECONDS / 3:
                failed_over = True
                killed = await asyncio.to_thread(cluster.kill_primary)
                events.append(f"{time.time() - started:.0f}s: Redis primary SIGKILLed")
                await asyncio.sleep(5)
                await asyncio.to_thread(cluster.restart, killed)
                events.append(
                    f"{time.time() - started:.0f}s: the killed server back, primary now"
                    f" {cluster.current_primary_port()}"
                )

    async def run() -> None:
        await asyncio.gather(load(base, started + SECONDS, accepted, refused), chaos())

    try:
        asyncio.run(run())
        print("\n".join(events))
        pending = settle(client, accepted)
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for invocation_id in accepted:
            record = client.hgetall(f"conveyor:job:{invocation_id}")
            statuses[record.get("status", "missing")] += 1
            if record.get("status") == "failed":
                errors[json.loads(record["error"])["type"]] += 1
        completions = Counter(runs.read_text().split())
        twice = sum(1 for i in accepted if completions[i] > 1)
        redelivered = sum(
            1 for i in accepted if int(client.hget(f"conveyor:job:{i}", "attempts") or 0) > 1
        )
        stragglers = Counter(
            (
                client.hget(f"conveyor:job:{i}", "function"),
                client.hget(f"conveyor:job:{i}", "status"),
            )
            for i in pending
        )
        if stragglers:
            print("not finished:", dict(stragglers))
        figures = {
            "seconds": SECONDS,
            "accepted": len(accepted),
            "succeeded": statuses["succeeded"],
            "failed visibly": statuses["failed"],
            "failures by type": dict(errors),
            "lost": len(pending),
            "executed twice (handler completed more than once)": twice,
            "attempted more than once (retries and redeliveries)": redelivered,
            "refused (not accepted)": dict(refused),
            "worker kills": sum("SIGKILL worker" in e for e in events),
            "redis replica restarts": sum("replica started" in e for e in events),
            "redis failovers": sum("primary SIGKILLed" in e for e in events),
        }
        print(json.dumps(figures, indent=2))
        return 1 if pending else 0
    finally:
        for proc in [api, *workers]:
            proc.stop()
        cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main())
