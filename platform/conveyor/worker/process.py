"""``conveyor worker``: a supervising Celery parent and a prefork pool of children.

The parent reads manifests only, from the function store (never user code, so never
torch or CUDA): it re-stamps what it holds (its messages, its batches' items, its slots)
every third of ``[worker] visibility_timeout``, so only what a vanished worker held is
delivered again, within that timeout whatever the functions' time limits; it writes a
heartbeat so the API can say which queues have live workers, and drops unpacked versions
the store has collected from the machine's version cache. Each child imports the serving
versions of its queues' functions and runs ``setup()`` once when it starts
(``worker_proc_alive_timeout`` is raised to ``[worker] start_timeout`` for model loading),
then takes one message at a time, running the version each names. No functions folder is
read: a worker needs only the Redis URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import redis
from celery import signals
from celery.concurrency import get_implementation
from celery.utils.log import mlevel
from celery.worker import state

from conveyor.broker.app import BATCH_TASK_NAME, MAP_TASK_NAME, create_celery
from conveyor.broker.census import Heartbeats
from conveyor.db import keyspace
from conveyor.db.connections import sync_client
from conveyor.functions.manifest import Manifest
from conveyor.invocations.stranded import StrandedSweeper, sweep_quietly
from conveyor.log import get_logger
from conveyor.settings import Settings
from conveyor.store.cache import VersionCache
from conveyor.store.db import StoreReader
from conveyor.worker.batches import rearm_stranded
from conveyor.worker.environments import EnvironmentWorkers
from conveyor.worker.executor import Executor
from conveyor.worker.stopping import tell_children
from conveyor.worker.task import register_task

log = get_logger(__name__)

ENVIRONMENTS_EVERY = 0.25  # seconds between looks for environments to start or stop (one HGETALL)
PRUNE_EVERY = 60.0  # seconds between looks for cached versions the store has collected
MIN_LIFE = 30.0  # a worker that stops on an error younger than this exits (no restart loop)


class WorkerProcess:
    """The supervising parent of one ``conveyor worker``; ``queues`` are names from
    :func:`~conveyor.settings.all_queues`, checked where the command line is read."""

    def __init__(
        self,
        settings: Settings,
        queues: list[str],
        concurrency: int,
        name: str | None = None,
        *,
        environment: str | None = None,
        environ: Mapping[str, str] | None = None,
        environments_on_demand: bool = False,
    ) -> None:
        # A worker signs no webhook: the secret stays out of the memory its children inherit.
        settings = settings.model_copy(
            update={"webhooks": settings.webhooks.model_copy(update={"secret": ""})}
        )
        self.settings = settings
        self.queues = queues
        self.concurrency = concurrency
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.name = name or f"conveyor-{'-'.join(queues)}-{os.getpid()}@{socket.gethostname()}"
        self._client = sync_client(settings)
        self.store = StoreReader(lambda: self._client)
        self.cache = VersionCache(settings.store.cache_dir)
        self.serving = self._read_serving()
        self.visibility_timeout = settings.worker.visibility_timeout
        self.app = create_celery(
            settings, visibility_timeout=self.visibility_timeout, queues=queues
        )
        self.executor = Executor(settings, queues)
        register_task(self.app, self.executor)
        self._consumer: Any = None
        self._stopping = False
        self._stop = threading.Event()
        self.watchdog = Watchdog(self)
        # the worker processes of its functions' own environments (none in one of those)
        self.environments = (
            None
            if environment is not None
            else EnvironmentWorkers(
                settings,
                queues,
                concurrency,
                self.name,
                environ=os.environ if environ is None else environ,
                client=lambda: self._client,
                on_demand=environments_on_demand,
            )
        )

    def _read_serving(self) -> dict[str, tuple[str, Manifest]]:
        """What serves (name -> version, manifest); the last known if Redis is away."""
        try:
            return self.store.serving()
        except redis.RedisError as exc:
            log.warning("function_store_unavailable", error=str(exc))
            return getattr(self, "serving", {})

    def _manifests(self) -> list[Manifest]:
        return [manifest for _, manifest in self.serving.values()]

    def run(self) -> None:
        signals.setup_logging.connect(lambda **_: None, weak=False)
        signals.worker_process_init.connect(lambda **_: self.executor.init_process(), weak=False)
        signals.worker_ready.connect(self._on_ready, weak=False)
        signals.worker_shutdown.connect(self._on_shutdown, weak=False)
        signals.worker_shutting_down.connect(self._on_shutting_down, weak=False)
        signals.task_received.connect(lambda **_: self.watchdog.progressed(), weak=False)
        self._prune_cache()
        log.info(
            "worker_starting",
            worker=self.name,
            queues=self.queues,
            concurrency=self.concurrency,
            visibility_timeout=self.visibility_timeout,
        )
        # What `celery worker` does once its options are parsed, without celery's command
        # line: that imports every subcommand and plugin (click-repl and prompt-toolkit for
        # `celery shell`, Flower and Tornado through its entry point: ~0.1 s and ~15 MiB).
        worker = self.app.Worker(
            hostname=self.name,
            pool_cls=get_implementation("prefork"),
            loglevel=mlevel(self.settings.log.level.upper()),
            queues=list(self.queues),
            concurrency=self.concurrency,
            without_gossip=True,
            without_mingle=True,
        )
        started = time.monotonic()
        worker.start()
        if worker.exitcode and time.monotonic() - started > MIN_LIFE and not self._stopping:
            # Celery stopped on an error of its own ("Unrecoverable error"): start afresh,
            # as the same process, so honcho, systemd or a supervisor keep it.
            restart("worker_stopped_on_error", exitcode=worker.exitcode)
        raise SystemExit(worker.exitcode)

    def _apply_visibility_timeout(self) -> None:
        if self._consumer is None:
            return
        channel = self._consumer.connection.default_channel
        channel.visibility_timeout = self.visibility_timeout
        # kombu caches the figure on the channel's QoS object.
        channel.qos.__dict__.pop("visibility_timeout", None)

    def _on_ready(self, sender: Any = None, **_: Any) -> None:
        self._consumer = sender
        self._apply_visibility_timeout()
        threading.Thread(target=self._heartbeat, name="conveyor-heartbeat", daemon=True).start()
        threading.Thread(target=self._renew_leases, name="conveyor-leases", daemon=True).start()
        threading.Thread(target=self.watchdog.run, name="conveyor-watchdog", daemon=True).start()
        if self.environments is not None:
            threading.Thread(
                target=self._environment_workers, name="conveyor-environments", daemon=True
            ).start()
        log.info("worker_ready", worker=self.name, queues=self.queues)

    def _on_shutting_down(self, **_: Any) -> None:
        """A warm shutdown begins (in the signal handler): running handlers get their
        ``[worker] shutdown_grace`` (see :mod:`.stopping`)."""
        self._stopping = True
        if self._consumer is not None:
            tell_children(_pool_pids(self._consumer))

    def _environment_workers(self) -> None:
        """Keep a worker process per environment its queues' functions run in."""
        assert self.environments is not None
        last_prune = 0.0
        while not self._stop.wait(ENVIRONMENTS_EVERY):
            try:
                self.environments.update(self.store.serving())
                if time.time() - last_prune >= PRUNE_EVERY:
                    last_prune = time.time()
                    self.environments.forget_collected()
            except redis.RedisError as exc:
                log.warning("function_store_unavailable", error=str(exc))

    def _on_shutdown(self, **_: Any) -> None:
        self._stop.set()
        if self.environments is not None:
            self.environments.close()
        with contextlib.suppress(redis.RedisError):
            Heartbeats(self._redis()).forget(self.name)

    def _redis(self) -> redis.Redis:
        return sync_client(self.settings)

    def _prune_cache(self) -> None:
        """Forget unpacked versions the store no longer holds: nothing can run them."""
        held = self.cache.versions()
        try:
            gone = set(held) - self.store.retained(held)
        except redis.RedisError as exc:
            log.warning("function_store_unavailable", error=str(exc))
            return
        for name, version in gone:
            self.cache.remove(name, version)
            log.info("cached_version_removed", function=name, version=version)

    def _renew_leases(self) -> None:
        """Keep Redis from redelivering what this worker still holds.

        kombu redelivers a message once it has been unacked for the visibility timeout,
        and a batch's items are claimed by another worker once idle that long in the
        stream's group; an attempt may run far longer, so every third of the timeout the
        parent re-stamps the delivery time of each message it holds and claims its
        batches' items again for the children that read them. Only a worker that is gone
        stops doing so. The slots its running attempts hold ([limits] concurrency) are
        renewed the same way, every third of ``[worker] slot_lease``.
        """
        client = self._redis()
        lease = self.settings.worker.slot_lease
        while not self._stop.wait(max(0.2, min(self.visibility_timeout, lease) / 3)):
            held = _held_requests()
            if not held:
                continue
            now = time.time()
            tags = [str(r.message.delivery_tag) for r in held if not r.acknowledged]
            try:
                pipe = client.pipeline(transaction=False)
                if tags:
                    pipe.zadd(keyspace.KOMBU_UNACKED_INDEX, dict.fromkeys(tags, now), xx=True)
                batches = _batch_runs(client, held, _pool_pids(self._consumer))
                for batch in batches:
                    _keep_claimed(pipe, batch)
                for function, invocation_id in self._slot_holders(held, batches):
                    pipe.zadd(keyspace.slots(function), {invocation_id: now + lease}, xx=True)
                pipe.execute()
            except redis.RedisError as exc:
                log.warning("lease_renewal_failed", error=str(exc))

    def _slot_holders(
        self, held: list[Any], batches: list[dict[str, Any]]
    ) -> list[tuple[str, str]]:
        """(function, member) of the slots the attempts running here hold: an
        invocation's id; a batch's items' ids (``batches``: the runs the parent knows,
        ``batch-run:<task id>``); a map job chunk's places (worker/places)."""
        found = []
        for request in held:
            kwargs = request.kwargs or {}
            function = str(kwargs.get("function"))
            served = self.serving.get(function)
            if served is None or not served[1].limits.concurrency:
                continue
            if request.type == BATCH_TASK_NAME:
                continue  # its items, below
            if request.type == MAP_TASK_NAME and int(kwargs.get("chunk", -1)) >= 0:
                batching = served[1].batching
                token = f"map:{kwargs.get('job')}:{kwargs.get('chunk')}"
                size = batching.max_batch_size if batching else 1
                found += [(function, f"{token}:{i}") for i in range(1, size + 1)]
            elif invocation_id := kwargs.get("invocation_id"):
                found.append((function, str(invocation_id)))
        for batch in batches:
            served = self.serving.get(batch["function"])
            if served is not None and served[1].limits.concurrency:
                found += [(batch["function"], str(i["invocation_id"])) for i in batch["items"]]
        return found

    def _rearm_batches(self, client: redis.Redis) -> None:
        """Batch items no trigger is coming for get one (see :func:`rearm_stranded`)."""
        try:
            rearm_stranded(client, self.app, self.serving, self.queues, self.visibility_timeout)
        except redis.RedisError as exc:
            log.warning("batch_sweep_failed", error=str(exc))

    def _heartbeat(self) -> None:
        """Say every ``[worker] heartbeat`` seconds what this worker serves and how busy
        it is; the key expires after three missed beats, so a dead worker drops out."""
        client = self._redis()
        census = Heartbeats(client)
        interval = self.settings.worker.heartbeat
        sweeper = StrandedSweeper(client, self.settings.worker.restore_interval, self.name)
        started = last_prune = last_sweep = time.time()
        while not self._stop.is_set():
            if time.time() - last_sweep >= sweeper.interval:
                last_sweep = time.time()
                sweep_quietly(sweeper)
                self._rearm_batches(client)
            self.serving = self._read_serving()
            if time.time() - last_prune >= PRUNE_EVERY:
                last_prune = time.time()
                self._prune_cache()
            payload = {
                "name": self.name,
                "host": socket.gethostname(),
                "queues": self.queues,
                "concurrency": self.concurrency,
                "device": self.device,
                "pid": os.getpid(),
                "started_at": started,
                "seen_at": time.time(),
                "active": _active_count(),
                "functions": {name: version for name, (version, _) in self.serving.items()},
                "stalled_s": round(self.watchdog.stalled_s, 1),
            }
            self.watchdog.beat()
            try:
                census.beat(self.name, payload, interval)
            except redis.RedisError as exc:
                log.warning("heartbeat_failed", error=str(exc))
            self._stop.wait(interval)


class Watchdog:
    """Notices a worker that stopped making progress and starts it afresh.

    kombu has lost a worker's consumer in more than one way when Redis went away (a
    channel closing on a released connection; a consumer that never took a message again
    after a restart), and Celery does not always notice. So the parent watches: its
    consumer took no message for ``[worker] stall_after`` seconds while Redis answers,
    its queues hold messages and it has room for one, or its heartbeat has not beaten for
    as long. Then it says so in its heartbeat, kills its pool and runs its own command
    again as the same process (:func:`restart`); what it held is redelivered after the
    visibility timeout, as for a lost worker, and nothing accepted is lost.
    """

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.progress_at = self.beat_at = time.monotonic()
        self.stalled_s = 0.0

    def progressed(self) -> None:
        self.progress_at = time.monotonic()

    def beat(self) -> None:
        self.beat_at = time.monotonic()

    def run(self) -> None:
        worker = self.worker
        limit = worker.settings.worker.stall_after
        census = Heartbeats(sync_client(worker.settings))
        every = min(worker.settings.worker.heartbeat, limit / 3)
        while not worker._stop.wait(every):
            now = time.monotonic()
            self.stalled_s = self._stalled(census, now)
            if self.stalled_s > limit:
                self._restart("worker_consumer_stalled", self.stalled_s)
            if now - self.beat_at > limit + worker.settings.worker.heartbeat:
                self._restart("worker_heartbeat_stalled", now - self.beat_at)

    def _stalled(self, census: Heartbeats, now: float) -> float:
        """Seconds the consumer has taken nothing while it could have (0: it has not)."""
        worker = self.worker
        if len(_held_requests()) >= worker.concurrency:
            self.progress_at = now  # busy: nothing to take
            return 0.0
        try:
            waiting = census.depth(worker.queues)  # its messages, every priority
        except redis.RedisError:
            self.progress_at = now  # Redis away: the consumer's time starts once it is back
            return 0.0
        if not waiting:
            self.progress_at = now
            return 0.0
        return now - self.progress_at

    def _restart(self, event: str, seconds: float) -> None:
        worker = self.worker
        log.error(event, worker=worker.name, seconds=round(seconds, 1))
        if worker._consumer is not None:
            for pid in _pool_pids(worker._consumer):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        restart(event)


def restart(reason: str, **fields: Any) -> NoReturn:
    """Run this worker's own command again, as the same process (the same pid: honcho,
    systemd, Kubernetes or ``conveyor worker --autoscale`` keep it)."""
    log.warning("worker_restarting", reason=reason, **fields)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _batch_runs(client: redis.Redis, held: list[Any], children: list[int]) -> list[dict[str, Any]]:
    """The batches this worker's pool ``children`` run, as they recorded them
    (worker/batches): a trigger redelivered from a vanished worker may still have its old
    record, whose items are not this worker's to keep."""
    ids = [str(r.id) for r in held if r.type == BATCH_TASK_NAME]
    runs = client.mget([keyspace.batch_run(i) for i in ids]) if ids else []
    found = [json.loads(run) for run in runs if run]
    return [batch for batch in found if batch.get("pid") in children]


def _keep_claimed(pipe: Any, batch: dict[str, Any]) -> None:
    """A batch's items claimed again by the child that read them: their idle time in the
    stream's group starts over, so no other worker takes them while this one lives."""
    entries = [item["entry_id"] for item in batch["items"]]
    if entries and batch.get("consumer"):
        pipe.xclaim(
            keyspace.batch_stream(batch["function"]),
            keyspace.BATCH_GROUP,
            batch["consumer"],
            0,
            entries,
            justid=True,
        )


def _pool_pids(consumer: Any) -> list[int]:
    """The pool's children (billiard's processes behind Celery's TaskPool)."""
    pool = getattr(getattr(consumer, "pool", None), "_pool", None)
    return [proc.pid for proc in getattr(pool, "_pool", []) if proc.pid]


def _active_count() -> int:
    """Invocations (or batches) this worker's pool is running now."""
    return len(state.active_requests)


def _held_requests() -> list[Any]:
    """The requests this worker has taken (running or reserved)."""
    for _ in range(3):  # the sets change under us while the consumer thread works
        try:
            return [*state.active_requests, *state.reserved_requests]
        except RuntimeError:
            continue
    return []
