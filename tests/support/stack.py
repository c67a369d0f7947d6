"""A private Redis, a deploy.toml and a functions folder, with workers and an API on demand; HTTP helpers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import redis
from litestar.testing import TestClient

from conveyor.api.app import create_app
from conveyor.settings import Settings, load_settings
from tests.support.functions import write_settings
from tests.support.processes import Process, conveyor, start_worker, wait_for, wait_until
from tests.support.servers import RedisServer

LOCAL = (
    "http://127.0.0.1"  # the in-process app's base URL: a keyless API serves loopback names only
)


class ClientThreads:
    """``count`` client threads, each running :meth:`run` (given its number) until the
    ``with`` block ends and :attr:`stopping` is set."""

    def __init__(self, count: int) -> None:
        self.stopping = threading.Event()
        self._threads = [threading.Thread(target=self.run, args=(n,)) for n in range(count)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(60)

    def run(self, n: int) -> None:
        raise NotImplementedError


def make_key(stack: Stack, name: str, *scopes: str, options: tuple[str, ...] = ()) -> str:
    """``conveyor keys create``, as an operator runs it: the new key; ``options``: its
    limits (``--rate 5/s`` ...)."""
    args = [a for scope in scopes for a in ("--scope", scope)]
    return cli(stack, "keys", "create", "--name", name, *args, *options).strip()


def cli(stack: Stack, *args: str) -> str:
    """A ``conveyor`` command on the stack's deploy.toml: what it printed."""
    done = subprocess.run(
        conveyor(*args),
        env={**os.environ, "CONVEYOR_CONFIG": str(stack.config)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


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

    def set_worker(self, **values: object) -> None:
        """Add keys to deploy.toml's [worker] table (before starting processes)."""
        text = self.config.read_text().replace("restore_interval = 1.0\n", "")
        self.config.write_text(text)
        self.set_settings("worker", **values)

    def set_settings(self, section: str, **values: object) -> None:
        """Add keys to one of deploy.toml's tables (before starting processes)."""
        lines = "".join(f"{k} = {v}\n" for k, v in values.items())
        text = self.config.read_text()
        self.config.write_text(text.replace(f"[{section}]\n", f"[{section}]\n" + lines))

    def worker(self, *args: str, env: dict[str, str] | None = None) -> Process:
        log = self.root / f"worker-{len(self.workers)}.log"
        proc = start_worker(self.config, log, *args, redis_client=self.redis, env=env)
        self.workers.append(proc)
        return proc

    def supervisor(self, *args: str, expect: int, env: dict[str, str] | None = None) -> Process:
        """Start ``conveyor worker --gpus/--autoscale`` and wait for ``expect`` of its
        worker processes to send a heartbeat."""
        log = self.root / f"worker-{len(self.workers)}.log"
        proc = Process(conveyor("worker", *args), self.config, log, env=env)
        self.workers.append(proc)
        wait_for(
            lambda: len(self.heartbeats(proc)) >= expect or proc.proc.poll() is not None,
            60,
            f"{expect} supervised workers",
        )
        assert proc.proc.poll() is None, log.read_text()[-3000:]
        return proc

    def heartbeats(self, supervisor: Process) -> list[dict[str, Any]]:
        """Live heartbeats of the worker processes ``supervisor`` started."""
        client = self.redis
        names = client.smembers("conveyor:workers")
        mine = [n for n in names if f"-{supervisor.pid}." in n]
        beats = [client.get(f"conveyor:worker:{n}") for n in mine]
        return [json.loads(b) for b in beats if b]

    @contextlib.contextmanager
    def api(self) -> Iterator[TestClient]:  # type: ignore[type-arg]
        """The real app in this process, once it has inspected the functions."""
        with TestClient(create_app(self.settings()), base_url=LOCAL, timeout=90) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, 60, "api readiness")
            yield client

    def close(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.server.stop()


def invoke(
    client: TestClient,
    name: str,
    payload: object,
    wait: float | None = None,  # type: ignore[type-arg]
    version: str | None = None,
    **body: object,
) -> tuple[int, dict]:  # type: ignore[type-arg]
    params: dict[str, object] = {"wait": wait} if wait else {}
    if version is not None:
        params["version"] = version
    response = client.post(
        f"/functions/{name}/invoke", json={"input": payload, **body}, params=params
    )
    return response.status_code, response.json()


def cancel(client: TestClient, name: str, invocation_id: str) -> httpx.Response:  # type: ignore[type-arg]
    return client.post(f"/functions/{name}/results/{invocation_id}/cancel")


def result(client: TestClient, name: str, invocation_id: str, wait: float = 30) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/functions/{name}/results/{invocation_id}", params={"wait": wait})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def until_reloaded(client: TestClient, name: str, check) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return wait_until(  # type: ignore[no-any-return]
        lambda: client.get(f"/functions/{name}").json(), check, 10, f"{name} reloaded"
    )
