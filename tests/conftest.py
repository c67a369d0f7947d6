from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from litestar.testing import TestClient

from tests.support import RedisServer, Stack


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def functions_dir(tmp_path: Path) -> Path:
    path = tmp_path / "functions"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type[Stack]]:
    stacks: list[Stack] = []

    def build(extra_settings: str = "", redis_args: tuple[str, ...] = ()) -> Stack:
        root = tmp_path_factory.mktemp("stack")
        stack = Stack(root, RedisServer(root / "redis").start(*redis_args), extra_settings)
        stacks.append(stack)
        return stack

    yield build  # type: ignore[misc]
    for stack in stacks:
        stack.close()


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """The in-process API of the module's ``stack`` (a module defines ``stack``)."""
    with stack.api() as client:
        yield client


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Write a figure to the terminal, past pytest's capture, so every run shows it."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")

    def write(line: str) -> None:
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"[{request.node.name}] {line}")

    return write
