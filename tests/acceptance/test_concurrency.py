"""Many clients at once: every request is answered, none with a false 503."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.support import (
    RedisServer,
    copy_examples,
    free_port,
    start_api,
    start_worker,
    write_settings,
)

pytestmark = pytest.mark.acceptance

CLIENTS = 400  # well past the Redis pool's max_connections (64)


def test_hundreds_of_concurrent_invocations(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    functions = tmp_path / "functions"
    copy_examples(functions, "echo")
    config = write_settings(tmp_path / "deploy.toml", server.url, functions)
    api, base = start_api(config, tmp_path / "api.log", free_port())
    worker = start_worker(
        config, tmp_path / "worker.log", "--concurrency", "2", redis_client=server.client()
    )

    async def load() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post("/functions/echo/invoke", params={"wait": 60}, json={"input": i})
                    for i in range(CLIENTS)
                )
            )

    try:
        responses = asyncio.run(load())
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == CLIENTS, {s: statuses.count(s) for s in set(statuses)}
        assert sorted(r.json()["output"] for r in responses) == list(range(CLIENTS))
    finally:
        worker.stop()
        api.stop()
        server.stop()
