"""Test support: real redis-server processes, deploy.toml files, function folders and
Conveyor processes started as a user starts them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from litestar.testing import TestClient

from conveyor.api.app import create_app
from conveyor.errors import FunctionLoadError
from conveyor.functions.digest import folder_digest
from conveyor.functions.loader import LoadedFunction, load_function
from conveyor.functions.manifest import MANIFEST_FILE, parse_manifest
from conveyor.functions.registry import Change, FunctionEntry, Registry
from conveyor.settings import QueueSettings, Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


QUEUES = {"realtime": QueueSettings(), "batch": QueueSettings(), "default": QueueSettings()}


def load(folder: Path) -> LoadedFunction:
    """A function folder's version, imported as a worker pool child imports it."""
    manifest = parse_manifest(folder / MANIFEST_FILE, QUEUES)
    return load_function(folder.name, folder_digest(folder), folder, manifest)


def importing_refresh(registry: Registry) -> list[Change]:
    """Rescan and check each new version by importing it here (what the API's inspector
    subprocess does), accepting it with its schemas or rejecting it with the error."""
    scan = registry.scan()
    changes = list(scan.changes)
    for spec in scan.candidates:
        try:
            schemas = load_function(spec.name, spec.version, spec.folder, spec.manifest).schemas()
        except FunctionLoadError as exc:
            change = registry.reject(spec, str(exc))
        else:
            change = registry.accept(spec, schemas)
        if change is not None:
            changes.append(change)
    return changes


def loaded_entries(root: Path) -> list[FunctionEntry]:
    """Every folder under ``root``, checked by importing it, as the API lists them."""
    registry = Registry(root, QUEUES)
    importing_refresh(registry)
    return registry.entries()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def wait_until(
    fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 20.0, what: str = ""
) -> Any:
    """Call ``fetch`` until ``done`` accepts its value; return that value."""
    found: list[Any] = []

    def check() -> bool:
        value = fetch()
        if done(value):
            found.append(value)
            return True
        return False

    wait_for(check, timeout, what)
    return found[0]


class RedisServer:
    """A private redis-server on a free port, started and stopped by the test session."""

    def __init__(self, workdir: Path, port: int | None = None, bind: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.bind = bind
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> RedisServer:
        """Start (or restart, on the same port and directory) with ``extra`` arguments."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra = extra or getattr(self, "extra", ())
        extra = self.extra
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                *self.bind.split(),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis.Redis(port=self.port).ping(), 10, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


def write_settings(path: Path, redis_url: str, functions: Path, extra: str = "") -> Path:
    path.write_text(
        textwrap.dedent(f"""\
        [redis]
        url = "{redis_url}"
        data_dir = "{path.parent / "redis-data"}"
        [api]
        port = {free_port()}
        [functions]
        dir = "{functions}"
        [worker]
        restore_interval = 1.0
        heartbeat = 1.0
        [log]
        format = "json"
        [store]
        [queues.realtime]
        max_timeout = 60
        [queues.batch]
        [queues.default]
        """)
        + textwrap.dedent(extra)
    )
    return path


def write_function(root: Path, name: str, code: str, manifest: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(textwrap.dedent(code))
    (folder / "function.toml").write_text(textwrap.dedent(manifest))
    return folder


def copy_examples(root: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(
            REPO / "functions" / name, root / name, ignore=shutil.ignore_patterns("__pycache__")
        )


class Process:
    """A Conveyor command in its own process group, its output kept in a file."""

    def __init__(
        self,
        args: list[str],
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        full_env = {
            **os.environ,
            "CONVEYOR_CONFIG": str(config),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            args,
            env=full_env,
            cwd=cwd or config.parent,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a worker's parent and its pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        self.kill(signal.SIGKILL)  # strays of the group, if any
        self._out.close()


def conveyor(*args: str) -> list[str]:
    return [sys.executable, "-m", "conveyor", *args]


def start_worker(
    config: Path,
    log: Path,
    *args: str,
    redis_client: redis.Redis,
    env: dict[str, str] | None = None,
) -> Process:
    """Start ``conveyor worker`` and wait for its heartbeat (it is consuming)."""
    before = set(redis_client.keys("conveyor:worker:*"))
    proc = Process(conveyor("worker", *args), config, log, env)
    wait_for(
        lambda: (
            set(redis_client.keys("conveyor:worker:*")) - before or proc.proc.poll() is not None
        ),
        30,
        "worker heartbeat",
    )
    assert proc.proc.poll() is None, log.read_text()[-3000:]
    return proc


def make_key(stack: Stack, name: str, *scopes: str) -> str:
    """``conveyor keys create``, as an operator runs it: the new key."""
    args = [a for scope in scopes for a in ("--scope", scope)]
    done = subprocess.run(
        conveyor("keys", "create", "--name", name, *args),
        env={**os.environ, "CONVEYOR_CONFIG": str(stack.config)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def start_api(
    config: Path, log: Path, port: int, env: dict[str, str] | None = None
) -> tuple[Process, str]:
    proc = Process(conveyor("api", "--port", str(port)), config, log, env)
    base = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(f"{base}/readyz").status_code == 200 or proc.proc.poll() is not None,
        30,
        "api readiness",
    )
    assert proc.proc.poll() is None, log.read_text()[-3000:]
    return proc, base


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

    def worker(self, *args: str) -> Process:
        log = self.root / f"worker-{len(self.workers)}.log"
        proc = start_worker(self.config, log, *args, redis_client=self.redis)
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
        with TestClient(create_app(self.settings()), timeout=90) as client:
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
