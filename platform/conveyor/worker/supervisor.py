"""``conveyor worker --gpus ... / --autoscale MIN,MAX``: worker processes, supervised.

The supervisor runs no user code and never imports torch or Celery. It starts ordinary
``conveyor worker`` processes (each a Celery prefork parent enforcing hard limits, with its
pool children), one per GPU with ``CUDA_VISIBLE_DEVICES`` set before the process starts,
replaces any that dies, and -- with ``--autoscale`` -- starts more while the queue backs up
and stops idle ones, one at a time, by warm shutdown once the queue has stayed empty.

Nothing is lost by any of this: a worker process that dies leaves its messages unacked
and Redis redelivers them (see the README's reliability section); a process stopped on
scale-down finishes what it runs and returns what it holds before it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import redis

from conveyor.broker.census import AUTOSCALER, Heartbeats
from conveyor.db.connections import sync_client
from conveyor.errors import WorkerOptionsError
from conveyor.log import get_logger
from conveyor.runtime.gpus import device_env
from conveyor.settings import Settings
from conveyor.store.db import StoreReader

log = get_logger(__name__)

QUICK_DEATH = 30.0  # a process that dies younger than this is restarted with a backoff
MAX_BACKOFF = 30.0
PR_SET_PDEATHSIG = 1


def parse_autoscale(spec: str, devices: list[str] | None) -> tuple[int, int]:
    """``MIN,MAX`` worker processes; with ``--gpus`` never more than the devices listed."""
    try:
        low, high = (int(part) for part in spec.split(","))
    except ValueError:
        raise WorkerOptionsError(
            f"--autoscale {spec!r}: give MIN,MAX worker processes, e.g. --autoscale 1,4"
        ) from None
    if not (0 <= low <= high and high >= 1):
        raise WorkerOptionsError(f"--autoscale {spec!r}: needs 0 <= MIN <= MAX and MAX >= 1")
    if devices is not None and high > len(devices):
        raise WorkerOptionsError(
            f"--autoscale {spec!r}: MAX is above the {len(devices)} device(s) in --gpus"
            f" ({','.join(devices)}); one process per device at most"
        )
    return low, high


@dataclass
class Slot:
    """One supervised worker process (and, after it dies, its replacement)."""

    name: str
    device: str | None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    stopping: bool = False  # asked to warm-shut down: not replaced when it exits
    quick_deaths: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Keeps between ``scale[0]`` and ``scale[1]`` worker processes on ``queues``."""

    settings: Settings
    queues: list[str]
    concurrency: int
    devices: list[str] | None = None  # one process per device, pinned
    scale: tuple[int, int] | None = None  # None: a fixed set (one per device)
    slots: list[Slot] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.devices is None and self.scale is None:
            raise WorkerOptionsError("a supervisor needs --gpus or --autoscale")
        self._wake = threading.Event()
        self._stopping = False
        self._empty_since: float | None = None
        self._next_look = 0.0
        self._next_beat = 0.0
        host = socket.gethostname()
        self.name = f"conveyor-autoscaler-{'-'.join(self.queues)}-{os.getpid()}@{host}"
        self._serial = 0
        client = sync_client(self.settings)
        self._census = Heartbeats(client)
        self._store = StoreReader(lambda: client)

    @property
    def minimum(self) -> int:
        if self.scale is not None:
            return self.scale[0]
        return len(self.devices or ())

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info(
            "supervisor_starting",
            queues=self.queues,
            devices=self.devices,
            autoscale=self.scale,
            concurrency=self.concurrency,
        )
        for _ in range(self.minimum):
            self._start(self._new_slot())
        while not self._stopping:
            self._reap()
            self._restart_due()
            if self.scale is not None:
                self._heartbeat()
                self._autoscale()
            self._wake.wait(0.2)
        return self._shutdown()

    def _heartbeat(self) -> None:
        """Tell the API these queues are served even with no process running yet."""
        now = time.monotonic()
        if now < self._next_beat:
            return
        self._next_beat = now + self.settings.worker.heartbeat
        beat = {
            "kind": AUTOSCALER,
            "name": self.name,
            "host": socket.gethostname(),
            "queues": self.queues,
            "pid": os.getpid(),
            "autoscale": self.scale,
            "devices": self.devices,
            "processes": sum(1 for s in self.slots if s.proc is not None),
        }
        try:
            self._census.beat(self.name, beat, self.settings.worker.heartbeat)
        except redis.RedisError as exc:
            log.warning("heartbeat_failed", error=str(exc))

    # -- processes ----------------------------------------------------------------------

    def _new_slot(self) -> Slot:
        busy = {s.device for s in self.slots}
        device = next((d for d in self.devices or () if d not in busy), None)
        self._serial += 1
        where = f"-gpu{device}" if device is not None else ""
        name = f"conveyor-{'-'.join(self.queues)}{where}-{os.getpid()}.{self._serial}"
        slot = Slot(f"{name}@{socket.gethostname()}", device)
        self.slots.append(slot)
        return slot

    def _start(self, slot: Slot) -> None:
        args = [sys.executable, "-m", "conveyor", "worker", "--queues", ",".join(self.queues)]
        args += ["--concurrency", str(self.concurrency), "--name", slot.name]
        if self.scale is not None:  # environments' processes: on their first message
            args.append("--environments-on-demand")
        env = dict(os.environ)
        if slot.device is not None:
            env.update(device_env(slot.device))
        # The supervisor starts no threads, so preexec_fn cannot deadlock here.
        slot.proc = subprocess.Popen(args, env=env, preexec_fn=die_with_parent)  # noqa: PLW1509
        slot.started_at = time.monotonic()
        slot.restart_at = None
        log.info("worker_process_started", worker=slot.name, pid=slot.proc.pid, device=slot.device)

    def _reap(self) -> None:
        for slot in list(self.slots):
            if slot.proc is None or (code := slot.proc.poll()) is None:
                continue
            slot.proc = None
            if slot.stopping:
                self.slots.remove(slot)
                log.info("worker_process_stopped", worker=slot.name, device=slot.device)
                continue
            lived = time.monotonic() - slot.started_at
            slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH else 0
            delay = min(MAX_BACKOFF, 0.5 * 2 ** max(0, slot.quick_deaths - 1))
            slot.restart_at = time.monotonic() + delay
            log.error(
                "worker_process_died",
                worker=slot.name,
                device=slot.device,
                exit=_describe_exit(code),
                lived_s=round(lived, 1),
                restart_in_s=delay,
                hint="its unfinished invocations are redelivered after the visibility timeout",
            )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.proc is None and slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    # -- scaling ------------------------------------------------------------------------

    def _autoscale(self) -> None:
        assert self.scale is not None
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + self.settings.worker.scale_interval
        try:
            depth = self._census.depth(self._queues(), self._batching())
            beats = {w["name"]: w for w in self._census.workers()}
        except redis.RedisError as exc:
            log.warning("autoscale_cannot_read_queue", error=str(exc))
            return
        serving = [s for s in self.slots if not s.stopping]
        active = sum(int(beats.get(s.name, {}).get("active", 0)) for s in serving)
        low, high = self.scale
        wanted = min(high, max(low, math.ceil((depth + active) / self.concurrency)))
        if depth:
            self._empty_since = None
        elif self._empty_since is None:
            self._empty_since = now
        if wanted > len(serving):
            self._scale_up(wanted - len(serving), depth)
        elif (
            len(serving) > low
            and self._empty_since is not None
            and now - self._empty_since >= self.settings.worker.scale_down_after
        ):
            self._scale_down(serving, beats)

    def _batching(self) -> dict[str, int]:
        """Batching functions on our queues -> max_batch_size, from the serving versions'
        manifests in the function store (read once per version)."""
        return {
            name: manifest.batching.max_batch_size
            for name, (_, manifest) in self._store.serving().items()
            if manifest.batching is not None and manifest.base_queue in self.queues
        }

    def _queues(self) -> list[str]:
        """Our queues, and their variants for the environments of functions on them (whose
        processes our worker processes start)."""
        variants = {
            manifest.target_queue
            for _, manifest in self._store.serving().values()
            if manifest.environment_id is not None and manifest.base_queue in self.queues
        }
        return [*self.queues, *sorted(variants)]

    def _scale_up(self, count: int, depth: int) -> None:
        for _ in range(count):
            if self.devices is not None and len(self.slots) >= len(self.devices):
                return  # every device still has a process, maybe one finishing its work
            slot = self._new_slot()
            log.info("autoscale_up", queues=self.queues, depth=depth, worker=slot.name)
            self._start(slot)

    def _scale_down(self, serving: list[Slot], beats: dict[str, dict[str, Any]]) -> None:
        """Warm-stop the newest idle process; one per ``scale_down_after``."""
        idle = [
            s for s in serving if s.proc is not None and beats.get(s.name, {}).get("active", 1) == 0
        ]
        if not idle:
            return
        slot = idle[-1]
        slot.stopping = True
        assert slot.proc is not None
        slot.proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown
        self._empty_since = time.monotonic()
        log.info("autoscale_down", queues=self.queues, worker=slot.name, device=slot.device)

    # -- shutdown -----------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:  # a second signal: do not wait for running invocations
            for slot in self.slots:
                if slot.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        slot.proc.send_signal(signal.SIGQUIT)
            return
        self._stopping = True
        self._wake.set()

    def _shutdown(self) -> int:
        log.info("supervisor_stopping", processes=sum(1 for s in self.slots if s.proc))
        for slot in self.slots:
            if slot.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.wait()
        if self.scale is not None:
            with contextlib.suppress(redis.RedisError):
                self._census.forget(self.name)
        log.info("supervisor_stopped")
        return 0


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM (a warm shutdown) if the supervisor dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
