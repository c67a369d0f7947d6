"""The worker processes of functions' own environments, beside this worker.

A ``conveyor worker`` runs in the platform's environment and serves the functions of its
queues that have none. For each environment a function on its queues runs in, it keeps one
more ``conveyor worker`` process running in that environment's interpreter, consuming only
that environment's variant of the queues (``<queue>.env-<id>``: messages reach only
processes of theirs, with their priorities). The environment is built on this machine the
first time it is met (from the lock in the function store: a machine without the
functions folder builds it too; once per machine, see :mod:`conveyor.environments.build`).

A process whose environment could not be built is still started, in the platform's
interpreter, told why: each invocation that reaches it fails with the build's error,
which names the package (never a crash loop, never work waiting forever). A process
that dies is started again (after a backoff when it dies young); one whose environment
no longer serves any function here is stopped by a warm shutdown, and its environment's
folder is removed once the store has collected the last version that used it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from conveyor.broker.census import Heartbeats
from conveyor.db import keyspace
from conveyor.environments.build import Environments
from conveyor.environments.db import read_lock
from conveyor.errors import EnvironmentResolveError
from conveyor.functions.manifest import Manifest, environment_queue
from conveyor.log import get_logger
from conveyor.settings import Settings

log = get_logger(__name__)

FAILED_ENV = "CONVEYOR_ENVIRONMENT_FAILED"  # the build's error, for a process that has none
QUICK_DEATH = 30.0  # a process dying younger than this is started again after a backoff
BACKOFF = 5.0
KEEP_NEW = 3600.0  # seconds a built environment stays without a lock in the store
STOP_GRACE = 60.0  # seconds a stopped process has to finish before it is killed


@dataclass
class Child:
    environment: str
    queues: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    started: float
    idle_since: float | None = None  # on demand: its queues empty and it running nothing


def wanted_environments(
    serving: Mapping[str, tuple[str, Manifest]], queues: list[str]
) -> dict[str, tuple[str, ...]]:
    """Environment id -> the queues (of ``queues``) whose functions run in it."""
    found: dict[str, set[str]] = {}
    for _, manifest in serving.values():
        environment = manifest.environment_id
        if environment is None or manifest.is_pipeline:
            continue
        runs = [manifest] + ([manifest.for_training()] if manifest.training else [])
        for each in runs:
            if each.base_queue in queues:
                found.setdefault(environment, set()).add(each.base_queue)
    return {env: tuple(sorted(qs)) for env, qs in found.items()}


class EnvironmentWorkers:
    """Keeps one worker process per environment in use on this worker's queues."""

    def __init__(
        self,
        settings: Settings,
        queues: list[str],
        concurrency: int,
        name: str,
        *,
        environ: Mapping[str, str],
        client: Callable[[], redis.Redis],
        on_demand: bool = False,
    ) -> None:
        self.settings = settings
        self.queues = queues
        self.concurrency = concurrency
        self.name = name
        self.environ = dict(environ)  # as the worker was started (its secrets included)
        self.client = client
        # --autoscale: a process starts on its environment's first message and stops once
        # idle for [worker] scale_down_after; otherwise one runs while its functions serve
        self.on_demand = on_demand
        self.environments = Environments(settings.store.cache_dir, settings.store.uv_cache_dir)
        self.children: dict[str, Child] = {}
        self._restart_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def update(self, serving: Mapping[str, tuple[str, Manifest]]) -> None:
        """Start, restart and stop processes to match what serves now."""
        wanted = wanted_environments(serving, self.queues)
        with self._lock:
            for environment, child in list(self.children.items()):
                if environment not in wanted or wanted[environment] != child.queues:
                    self._stop(child)
                elif child.proc.poll() is not None:
                    self._died(child)
                elif self.on_demand and self._idle_long(child, serving):
                    self._stop(child)
            now = time.monotonic()
            for environment, queues in wanted.items():
                if environment in self.children or now < self._restart_at.get(environment, 0):
                    continue
                if not self.on_demand or self._waiting(environment, queues, serving):
                    self._start(environment, queues)

    def _waiting(
        self, environment: str, queues: tuple[str, ...], serving: Mapping[str, tuple[str, Manifest]]
    ) -> int:
        """Messages (and batches) waiting for ``environment``'s process on ``queues``."""
        batching = {
            name: manifest.batching.max_batch_size
            for name, (_, manifest) in serving.items()
            if manifest.environment_id == environment and manifest.batching is not None
        }
        variants = [environment_queue(queue, environment) for queue in queues]
        return Heartbeats(self.client()).depth(variants, batching)

    def _idle_long(self, child: Child, serving: Mapping[str, tuple[str, Manifest]]) -> bool:
        """Whether an on-demand process has had nothing to do for scale_down_after."""
        beat = self.client().get(keyspace.worker(self._child_name(child.environment)))
        active = json.loads(beat).get("active", 1) if beat else 1
        if active or self._waiting(child.environment, child.queues, serving):
            child.idle_since = None
            return False
        now = time.monotonic()
        if child.idle_since is None:
            child.idle_since = now
        return now - child.idle_since >= self.settings.worker.scale_down_after

    def _child_name(self, environment: str) -> str:
        return f"{self.name}.env-{environment}"

    def _start(self, environment: str, queues: tuple[str, ...]) -> None:
        python, failure = self._interpreter(environment)
        if python is None and failure is None:
            return  # its lock is not in the store (collected, or Redis away): not now
        env = dict(self.environ)
        if failure is not None:
            env[FAILED_ENV] = failure
        else:
            env = self.environments.process_environ(environment, env)
        args = [python or sys.executable, "-m", "conveyor", "worker"]
        args += ["--queues", ",".join(queues), "--environment", environment]
        args += ["--concurrency", str(self.concurrency), "--name", self._child_name(environment)]
        proc = subprocess.Popen(args, env=env, start_new_session=False)
        self.children[environment] = Child(environment, queues, proc, time.monotonic())
        log.info(
            "environment_worker_started",
            environment=environment,
            queues=list(queues),
            pid=proc.pid,
            failed=failure,
        )

    def _interpreter(self, environment: str) -> tuple[str | None, str | None]:
        """(its Python, None) once built here; (None, why) if it cannot be built; (None,
        None) while the store has no lock for it."""
        if self.environments.ready(environment):
            return str(self.environments.python(environment)), None
        try:
            lock = read_lock(self.client(), environment)
        except redis.RedisError as exc:
            log.warning("function_store_unavailable", error=str(exc))
            return None, None
        if lock is None:
            return None, None
        try:
            return str(self.environments.ensure(environment, lock)), None
        except EnvironmentResolveError as exc:
            log.error("environment_build_failed", environment=environment, error=str(exc))
            return None, str(exc)
        except OSError as exc:
            why = f"the environment could not be built in {self.environments.root}: {exc}"
            log.error("environment_build_failed", environment=environment, error=why)
            return None, why

    def _died(self, child: Child) -> None:
        del self.children[child.environment]
        young = time.monotonic() - child.started < QUICK_DEATH
        self._restart_at[child.environment] = time.monotonic() + (BACKOFF if young else 0.0)
        log.warning(
            "environment_worker_exited",
            environment=child.environment,
            exitcode=child.proc.returncode,
        )

    def _stop(self, child: Child) -> None:
        del self.children[child.environment]
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)  # a warm shutdown: it finishes its work
            threading.Thread(target=_reap, args=(child.proc,), daemon=True).start()
        log.info("environment_worker_stopped", environment=child.environment)

    def forget_collected(self) -> None:
        """Remove built environments whose lock the store no longer holds (their last
        version was collected) and that no process here runs."""
        if not self.environments.root.is_dir():
            return
        client = self.client()
        for folder in self.environments.root.iterdir():
            environment = folder.name
            if not folder.is_dir() or environment in self.children:
                continue
            try:
                if read_lock(client, environment) is not None:
                    continue
            except redis.RedisError:
                return
            # not one being built, nor one built lately (an API here may have built it for
            # a deploy whose lock is not stored yet): both are checked under its file lock
            if self.environments.remove(environment, older_than=KEEP_NEW):
                log.info("environment_removed", environment=environment)

    def close(self) -> None:
        """Stop every process (the worker is shutting down): warm, then killed."""
        with self._lock:
            children = list(self.children.values())
            self.children.clear()
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            _reap(child.proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def environment_failure() -> str | None:
    """In a process of an environment that could not be built: why."""
    return os.environ.get(FAILED_ENV)
