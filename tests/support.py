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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

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
LOCAL = (
    "http://127.0.0.1"  # the in-process app's base URL: a keyless API serves loopback names only
)
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


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started, as /proc lists them (none once it has exited)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cpu_ticks(pid: int) -> int:
    """User + system CPU of ``pid`` (all its threads) so far, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


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

    def __init__(
        self, workdir: Path, port: int | None = None, bind: str = "127.0.0.1", password: str = ""
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.bind = bind
        self.password = password  # the default user's (requirepass), if any
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        secret = f":{self.password}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/0"

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
        wait_for(lambda: self.client().ping(), 10, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password or None, decode_responses=True)

    def in_sync(self) -> bool:
        """A replica that has loaded its first copy (one promoted before that is empty)."""
        return self.client().info("replication").get("master_link_status") == "up"

    def replicate(self, primary: RedisServer, *extra: str) -> RedisServer:
        """Start as ``primary``'s replica, and wait for its first copy."""
        self.start(*extra, "--replicaof", "127.0.0.1", str(primary.port))
        wait_for(self.in_sync, 20, "the replica's first copy")
        return self


class Sentinels:
    """A Redis primary, one replica and three sentinels watching them as ``conveyor``, on
    free loopback ports (redis-server in sentinel mode: Debian's redis-sentinel is the same
    program). A primary is declared down after ``down_after_ms`` without an answer."""

    MASTER = "conveyor"

    def __init__(self, workdir: Path, down_after_ms: int = 1000) -> None:
        self.workdir = workdir
        self.down_after_ms = down_after_ms
        self.persistence = (
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--repl-diskless-sync-delay", "0",  # (5 s by default: to wait for more replicas)
        )  # fmt: skip
        self.primary = RedisServer(workdir / "primary").start(*self.persistence)
        self.replica = RedisServer(workdir / "replica").replicate(self.primary, *self.persistence)
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            self.procs.append(self._sentinel(port))
        wait_for(self._ready, 20, "three sentinels that see the replica and each other")

    def _sentinel(self, port: int) -> subprocess.Popen[bytes]:
        folder = self.workdir / f"sentinel-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"  # sentinel rewrites its file: one each
        conf.write_text(
            textwrap.dedent(f"""\
            port {port}
            bind 127.0.0.1
            dir {folder}
            sentinel monitor {self.MASTER} 127.0.0.1 {self.primary.port} 2
            sentinel down-after-milliseconds {self.MASTER} {self.down_after_ms}
            sentinel failover-timeout {self.MASTER} 5000
            sentinel parallel-syncs {self.MASTER} 1
            """)
        )
        return subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _ready(self) -> bool:
        if not self.replica.in_sync():
            return False
        for port in self.ports:
            info = redis.Redis(port=port, decode_responses=True).sentinel_master(self.MASTER)
            if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                return False
        return True

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def settings(self) -> str:
        """The deploy.toml lines that point the platform at these sentinels."""
        listed = ", ".join(f'"{a}"' for a in self.addresses)
        return f'sentinels = [{listed}]\nmaster_name = "{self.MASTER}"\n'

    def current_primary_port(self) -> int:
        host_port = redis.Redis(port=self.ports[0]).sentinel_get_master_addr_by_name(self.MASTER)
        return int(host_port[1])

    def kill_primary(self) -> RedisServer:
        """SIGKILL whichever server is the primary now; returns it."""
        port = self.current_primary_port()
        server = self.primary if self.primary.port == port else self.replica
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(10)
        server.proc = None
        return server

    def restart(self, server: RedisServer) -> None:
        """Start a killed server again as the current primary's replica, as an operator's
        restart must (README "Redis Sentinel"): started as the primary it was, it would
        take writes until the sentinels demote it, and lose them to the resync then."""
        wait_for(lambda: self.current_primary_port() != server.port, 60, "the failover")
        primary = self.current_primary_port()
        server.start(*self.persistence, "--replicaof", "127.0.0.1", str(primary))

    def client(self) -> redis.Redis:
        """A client of the current primary."""
        return redis.Redis(port=self.current_primary_port(), decode_responses=True)

    def healthy(self) -> bool:
        """Whichever server is primary has an online replica (after a failover: once the
        killed server is back and the sentinels made it one)."""
        try:
            replication = self.client().info("replication")
        except (redis.RedisError, OSError):
            return False
        replica = replication.get("slave0")
        return isinstance(replica, dict) and replica.get("state") == "online"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(10)
        self.primary.stop()
        self.replica.stop()


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


RECORDING = """
    from conveyor import context

    def run(x: int) -> int:
        with open({runs!r}, "a") as f:
            f.write(context.current().id + "\\n")
        return x
"""


def write_recording_function(functions: Path, name: str, runs: Path, manifest: str = "") -> None:
    """A function that returns its input and appends each invocation's id to ``runs``."""
    code = RECORDING.format(runs=str(runs))
    write_function(functions, name, code, '[function]\nhandler = "handler:run"\n' + manifest)


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
