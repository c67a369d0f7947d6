"""Redis replication in `make bench` (issue 15): what ``[redis] min_replicas`` costs, and
what it saves when the primary dies.

- :func:`replicated_rates`: echo throughput on a primary with one replica, the API and
  worker started with ``min_replicas = 0`` and ``= 1`` in turn (alternated, same Redis).
- :func:`failover_losses`: a primary, a replica and three sentinels; clients submit as fast
  as they can while the primary is SIGKILLed ``rounds`` times (each time the killed server
  comes back, as the new primary's replica, before the next kill); then every accepted
  invocation is looked up: a 404 (its record went with the primary) or one never finished
  (its message did) is lost.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support import (
    ClientThreads,
    Process,
    RedisServer,
    Sentinels,
    free_port,
    start_api,
    start_worker,
    wait_for,
    write_settings,
)

HERE = Path(__file__).resolve().parent

FAILOVER_CLIENTS = 8
REDELIVERY = 10  # [worker] visibility_timeout


@contextmanager
def platform(
    root: Path, server: RedisServer, redis_lines: str, client: Callable[[], object]
) -> Iterator[str]:
    """An API and a worker (echo on its queue, one process) on ``server``'s settings plus
    ``redis_lines``: the API's base URL."""
    functions = root / "functions"
    if not functions.exists():
        shutil.copytree(HERE / "functions" / "echo", functions / "echo")
    config = write_settings(root / "deploy.toml", server.url, functions)
    text = config.read_text().replace("[redis]\n", "[redis]\n" + redis_lines)
    # What a worker had taken when the primary died is redelivered after this long.
    text = text.replace("[worker]\n", f"[worker]\nvisibility_timeout = {REDELIVERY}\n")
    config.write_text(text)
    procs: list[Process] = []
    try:
        api, base = start_api(config, root / "api.log", free_port())
        procs.append(api)
        worker = start_worker(
            config,
            root / "worker.log",
            "--queues",
            "realtime",
            "--concurrency",
            "1",
            redis_client=client(),
        )
        procs.append(worker)
        yield base
    finally:
        for proc in procs:
            proc.stop()


def replicated_rates(
    root: Path, runs: int, load: Callable[[str], dict[str, float]]
) -> dict[int, list[dict[str, float]]]:
    """``load`` (a throughput measure on an API's base URL) with ``min_replicas`` 0 and 1,
    alternated ``runs`` times on one primary with one replica."""
    primary = RedisServer(root / "primary").start()
    replica = RedisServer(root / "replica")
    try:
        replica.replicate(primary)
        samples: dict[int, list[dict[str, float]]] = {0: [], 1: []}
        for run in range(runs):
            for wanted in (0, 1):
                folder = root / f"min{wanted}-{run}"
                lines = f"min_replicas = {wanted}\n"
                with platform(folder, primary, lines, primary.client) as base:
                    load(base)  # warm
                    samples[wanted].append(load(base))
        return samples
    finally:
        replica.stop()
        primary.stop()


class Submitter(ClientThreads):
    """Clients submitting echo invocations as fast as answers come, noting the accepted."""

    def __init__(self, base: str, clients: int) -> None:
        super().__init__(clients)
        self.base = base
        self.accepted: list[str] = []
        self.refused = 0

    def run(self, n: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stopping.is_set():
                try:
                    answer = client.post("/functions/echo/invoke", json={"input": 1})
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    self.accepted.append(answer.json()["id"])
                else:
                    self.refused += 1
                    time.sleep(0.1)


def failover_losses(root: Path, min_replicas: int, rounds: int) -> dict[str, Any]:
    """Accepted and lost invocations over ``rounds`` primary kills."""
    cluster = Sentinels(root / "redis")
    try:
        lines = cluster.settings() + f"min_replicas = {min_replicas}\n"
        with platform(root, cluster.primary, lines, cluster.client) as base:
            back: list[float] = []
            with Submitter(base, FAILOVER_CLIENTS) as load:
                for _ in range(rounds):
                    wait_for(cluster.healthy, 60, "a primary with an online replica")
                    before = len(load.accepted)
                    wait_for(lambda: len(load.accepted) > before + 200, 60, "202s")  # noqa: B023
                    old = cluster.current_primary_port()
                    killed = cluster.kill_primary()
                    at = time.monotonic()
                    after = len(load.accepted)
                    wait_for(lambda: cluster.current_primary_port() != old, 60, "a failover")  # noqa: B023
                    cluster.restart(killed)  # (min_replicas 1 accepts again once it is in sync)
                    wait_for(lambda: len(load.accepted) > after, 60, "a 202 after the kill")  # noqa: B023
                    back.append(time.monotonic() - at)
                wait_for(cluster.healthy, 60, "a primary with an online replica")
            accepted = list(load.accepted)
            lost = _lost(base, accepted)
        return {
            "accepted": len(accepted),
            "lost": len(lost),
            "first 202 after kill (median s)": sorted(back)[len(back) // 2],
            "lost ids": lost,
        }
    finally:
        cluster.stop()


def _lost(base: str, accepted: list[str]) -> list[str]:
    """Accepted invocations with no record, or one that does not finish (its message
    went with the primary), once the backlog and the redeliveries have run."""
    with httpx.Client(base_url=base, timeout=90) as client:

        def status(invocation_id: str, wait: float = 0) -> str:
            answer = client.get(f"/functions/echo/results/{invocation_id}", params={"wait": wait})
            return "missing" if answer.status_code == 404 else str(answer.json()["status"])

        wait_for(lambda: status(accepted[-1], 10) == "succeeded", 300, "the backlog to run")
        unfinished = [i for i in accepted if status(i) != "succeeded"]
        deadline = time.monotonic() + REDELIVERY * 3
        while unfinished and time.monotonic() < deadline:
            time.sleep(1)
            unfinished = [i for i in unfinished if status(i) != "succeeded"]
        return [f"{i} {status(i)}" for i in unfinished]
