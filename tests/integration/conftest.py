from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from litestar.testing import TestClient

from conveyor.api.app import create_app
from conveyor.settings import Settings, load_settings
from support import Process, RedisServer, start_worker, wait_until, write_settings

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    """A private Redis, a deploy.toml and a functions folder; workers and an API on demand."""

    root: Path
    server: RedisServer
    extra_settings: str = ""
    workers: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.functions = self.root / "functions"
        self.functions.mkdir(parents=True, exist_ok=True)
        self.config = write_settings(
            self.root / "deploy.toml", self.server.url, self.functions, self.extra_settings
        )

    @property
    def redis(self) -> redis.Redis:
        return self.server.client()

    def settings(self) -> Settings:
        return load_settings(self.config)

    def worker(self, *args: str) -> Process:
        log = self.root / f"worker-{len(self.workers)}.log"
        proc = start_worker(self.config, log, *args, redis_client=self.redis)
        self.workers.append(proc)
        return proc

    def api(self) -> TestClient:  # type: ignore[type-arg]
        return TestClient(create_app(self.settings()), timeout=90)

    def close(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.server.stop()


@pytest.fixture(scope="module")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type[Stack]]:
    stacks: list[Stack] = []

    def build(extra_settings: str = "") -> Stack:
        root = tmp_path_factory.mktemp("stack")
        stack = Stack(root, RedisServer(root / "redis").start(), extra_settings)
        stacks.append(stack)
        return stack

    yield build  # type: ignore[misc]
    for stack in stacks:
        stack.close()


def invoke(
    client: TestClient,
    name: str,
    payload: object,
    wait: float | None = None,  # type: ignore[type-arg]
    **body: object,
) -> tuple[int, dict]:  # type: ignore[type-arg]
    params = {"wait": wait} if wait else {}
    response = client.post(
        f"/functions/{name}/invoke", json={"input": payload, **body}, params=params
    )
    return response.status_code, response.json()


def result(client: TestClient, name: str, invocation_id: str, wait: float = 30) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/functions/{name}/results/{invocation_id}", params={"wait": wait})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def until_reloaded(client: TestClient, name: str, check) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return wait_until(  # type: ignore[no-any-return]
        lambda: client.get(f"/functions/{name}").json(), check, 10, f"{name} reloaded"
    )
