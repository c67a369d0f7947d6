"""What a worker does with one message of the generic task.

The executor lives in every worker process. In pool children it imports function code and
runs it; in the supervising parent (which never imports user code, so never torch or CUDA)
it records what only the parent sees: hard time limits and dead children. Batches
(:mod:`conveyor.worker.batches`) reuse its attempt bookkeeping.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from traceback import format_exception
from typing import Any, cast

import redis
import structlog
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded, WorkerLostError
from redis.client import Pipeline

from conveyor import context
from conveyor.broker.app import kill_now
from conveyor.broker.messages import Invocation, encode_message
from conveyor.checkpoints.db import Checkpoints
from conveyor.context import InvocationContext
from conveyor.db import keyspace, replication
from conveyor.db.connections import sync_client
from conveyor.db.scripts import Scripts
from conveyor.errors import (
    ConveyorError,
    TrainingError,
    ValidationError,
    WorkerStopping,
)
from conveyor.functions.loader import LoadedFunction
from conveyor.functions.manifest import Manifest
from conveyor.invocations.records import (
    PROGRESS,
    START,
    TRANSITION,
    InvocationStatus,
    Requeue,
    Slot,
    start_args,
    stream_keys,
    transition_args,
)
from conveyor.log import get_logger
from conveyor.runtime import Runner, error_payload
from conveyor.runtime.capture import Captured, OutputCapture
from conveyor.runtime.streaming import StreamStopped
from conveyor.settings import Settings
from conveyor.streams.db import StreamWriter
from conveyor.trainings.db import hand_over
from conveyor.worker.checkpoints import AttemptCheckpoints
from conveyor.worker.files import Attempt, WorkerFiles
from conveyor.worker.local import LocalFunctions
from conveyor.worker.stopping import Stopping
from conveyor.worker.streaming import AttemptStream
from conveyor.worker.trainings import new_version

log = get_logger(__name__)

# A redelivered invocation (its worker died mid-attempt) gets this many starts beyond its
# declared retries before it fails with WorkerLostError, so a handler that kills its own
# process cannot loop forever.
LOST_WORKER_ALLOWANCE = 2


class Executor:
    """Runs invocations in this process and writes their outcome to the job record."""

    def __init__(self, settings: Settings, queues: list[str]) -> None:
        self.settings = settings
        self.queues = queues
        self.runner = Runner(settings.api.max_json_depth)
        self.capture = OutputCapture()
        self._redis: redis.Redis | None = None
        self._functions: LocalFunctions | None = None
        self._scripts: Scripts | None = None
        self.files = WorkerFiles(settings, lambda: self.redis)
        self.stopping = Stopping(settings.worker.shutdown_grace)
        self.app: Celery | None = None  # set when the task is registered (to kill with)

    # -- per process -------------------------------------------------------------------

    def init_process(self) -> None:
        """In a fresh pool child: import the serving version of each function on our
        queues and set it up, before taking work (see :mod:`.local`); any other version is
        imported when an invocation needs it, and fails only its own invocations."""
        self._redis = None
        self.stopping.install()
        self._functions = LocalFunctions(self.settings, lambda: self.redis)
        for loaded in self._functions.preload(self.queues):
            try:
                if loaded.is_class:
                    self.runner.instance(loaded)
            except Exception as exc:  # it fails visibly on its first invocation instead
                log.error("function_setup_failed", function=loaded.name, error=repr(exc))

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = sync_client(self.settings, retry_on_timeout=True)
        return self._redis

    @property
    def scripts(self) -> Scripts:
        """Lua scripts of this process's connection (batches and chunks use them too)."""
        if self._scripts is None or self._scripts.client is not self.redis:
            self._scripts = Scripts(self.redis)
        return self._scripts

    def transition(
        self,
        invocation_id: str,
        allowed: tuple[InvocationStatus, ...],
        to: InvocationStatus,
        *,
        pipe: Pipeline | None = None,
        logs: str = "",
        files: str = "",
        requeue: Requeue | None = None,
        **fields: str,
    ) -> tuple[int, str]:
        """Change the record's status if it is one of ``allowed``: (changed, previous).
        With ``pipe`` the change is only queued there, and (0, "") returned. ``logs``:
        what the attempt printed, kept with the record; ``files``: the output's files
        (JSON, :meth:`Attempt.listed`); either only when there is some."""
        if logs:
            fields["logs"] = logs
        if files:
            fields["files"] = files
        values = transition_args(
            invocation_id,
            allowed,
            to,
            metrics=self.settings.metrics.enabled,
            requeue=requeue,
            **fields,
        )
        if pipe is None and replication.wanted(self.settings):
            pipe = self.redis.pipeline(transaction=False)
            self.scripts.call(TRANSITION, client=pipe, **values)
            [answer] = replication.execute(pipe, self.settings, f"{invocation_id} {to}")
        else:
            answer = self.scripts.call(TRANSITION, client=pipe, **values)
            if pipe is not None:
                return 0, ""
        changed, previous, *stop = answer
        if stop and self.app is not None:  # a pipeline's step failed: its siblings stop
            kill_now(self.app, [str(task_id) for task_id in stop])
        return int(changed), str(previous)

    @property
    def functions(self) -> LocalFunctions:
        if self._functions is None:
            self.init_process()
        assert self._functions is not None
        return self._functions

    def load(self, name: str, version: str) -> LoadedFunction:
        """The version to run (see :meth:`LocalFunctions.load`)."""
        return self.functions.load(name, version)

    def manifest(self, name: str, version: str) -> Manifest | None:
        """``version``'s manifest, without importing it; else the serving version's."""
        reader = self.functions.reader
        found = reader.manifest(name, version)
        if found is None:
            found = reader.serving().get(name, (None, None))[1]
        return found

    # -- one invocation -----------------------------------------------------------------

    def execute(  # noqa: PLR0917
        self,
        task: Task[Any, Any],
        invocation_id: str,
        function: str,
        version: str,
        raw_input: Any,
        training: dict[str, Any] | None = None,
    ) -> None:
        bind(function, invocation_id, task)
        started = time.monotonic()
        try:
            fn = self.functions.load(function, version, training=training is not None)
        except ConveyorError as exc:
            if self.start(invocation_id) is not None:
                self.fail(invocation_id, exc, started, traceback=False)
            return
        slot = self.slot(task, fn, invocation_id, raw_input, training)
        admitted = self.admitted(fn, invocation_id, started, self.start(invocation_id, slot))
        if admitted is None:
            return
        ctx = self.context(fn, invocation_id, admitted, training)
        checkpoints, outputs = ctx.checkpoints, ctx.output_dir
        assert isinstance(checkpoints, AttemptCheckpoints)
        error: BaseException
        logs = Captured()
        files = Attempt(self.files, keyspace.record(invocation_id), fn.manifest.results.ttl)
        try:
            checkpoints.restore()
            output = self.run(fn, raw_input, ctx, files, logs)
            if training is not None:  # its version is made by an API process
                handed = self.hand_over(fn, ctx, output, logs)
                self.finished("trained" if handed else "discarded", started)
                return
        except StreamStopped as stopped:  # cancelled: its generator was closed at a yield
            self.finished("stopped", started, reason=str(stopped))
            return
        except SoftTimeLimitExceeded:
            error = soft_limit_error(fn)
        except SystemExit as exc:
            if isinstance(exc.code, int) and exc.code < 0:
                raise  # billiard's SIGTERM handler ending this child at the hard limit
            error = exc
        except (Exception, WorkerStopping) as exc:  # stopping: the worker shuts down
            error = exc
        else:
            changed, previous = self.transition(
                invocation_id,
                (InvocationStatus.RUNNING,),
                InvocationStatus.SUCCEEDED,
                output=output,
                logs=logs.text,
                files=files.listed(),
            )
            self.finished("succeeded" if changed else f"discarded_{previous}", started)
            return
        finally:
            files.cleanup()
            checkpoints.cleanup()
            _remove(outputs)
        attempt = ctx.attempt
        delay = self.retry_delay(fn, error, attempt)
        if delay is None:
            self.fail(invocation_id, error, started, logs=logs.text, folder=fn.folder)
            return
        # The next attempt's message is written with the record's change (not published by
        # task.retry() after it), and this message is acknowledged as the task returns.
        requeue = retry_message(
            task, fn, invocation_id, raw_input, delay=delay, attempt=attempt, training=training
        )
        self.mark_retrying(
            invocation_id,
            error,
            started,
            delay,
            logs=logs.text,
            folder=fn.folder,
            requeue=requeue,
        )

    def slot(
        self,
        task: Task[Any, Any],
        fn: LoadedFunction,
        invocation_id: str,
        raw_input: Any,
        training: dict[str, Any] | None,
    ) -> Slot | None:
        """For a function with ``[limits] concurrency`` or ``rate``: its slot and turn, and
        the message that waits parked when it may not start yet (this one, again, with its
        own delivery tag)."""
        limits = fn.manifest.limits
        if (limits.concurrency is None and limits.rate is None) or training is not None:
            return None
        tag = f"{invocation_id}.parked.{uuid.uuid4().hex[:12]}"
        message = retry_message(
            task, fn, invocation_id, raw_input, delay=0, attempt=0, training=None, tag=tag
        )
        return Slot(
            fn.name,
            limits.concurrency,
            self.settings.worker.slot_lease,
            limits.emission,
            message.queue_list,
            message.message,
        )

    def context(
        self,
        fn: LoadedFunction,
        invocation_id: str,
        admitted: tuple[int, bool],
        training: dict[str, Any] | None,
    ) -> InvocationContext:
        """What the attempt's handler sees: its checkpoints, and a training's output folder."""
        attempt, redelivered = admitted
        checkpoints = AttemptCheckpoints(
            self.files,
            Checkpoints(self.scripts),
            invocation_id,
            attempt,
            limit=fn.manifest.limits.max_checkpoint_bytes,
            ttl=fn.manifest.results.ttl,
        )
        outputs = Path(tempfile.mkdtemp(prefix="conveyor-training-")) if training else None
        return InvocationContext(
            invocation_id,
            fn.name,
            fn.version,
            attempt,
            redelivered,
            self.reporter(invocation_id),
            checkpoints=checkpoints,
            output_dir=outputs,
        )

    def hand_over(
        self, fn: LoadedFunction, ctx: InvocationContext, output: str, logs: Captured
    ) -> bool:
        """A training's handler returned: its version (the one it ran plus what it wrote)
        goes to the file store and the record waits for an API process to deploy it (see
        :mod:`.trainings`). False when the attempt was cancelled meanwhile."""
        assert fn.folder is not None and ctx.output_dir is not None
        data = new_version(fn.name, fn.folder, ctx.output_dir, self.settings.bundle_limit)
        store = self.files.store
        meta = store.put_bytes(
            data, kind="training", owner=None, ttl=fn.manifest.results.ttl, filename="version.zip"
        )
        if hand_over(self.scripts, ctx.id, ctx.attempt, meta.id, output, logs.text):
            return True
        store.remove(meta.id)
        return False

    def run(
        self,
        fn: LoadedFunction,
        raw_input: Any,
        ctx: InvocationContext,
        files: Attempt,
        logs: Captured,
    ) -> str:
        """One attempt's output, what it printed filling ``logs``; a streaming function's
        chunks and lines go to its stream as they come."""
        stream = None
        if fn.streaming is not None:
            limit = fn.manifest.limits.max_stream_bytes
            writer = StreamWriter(self.scripts, ctx.id, ctx.attempt, limit)
            stream = AttemptStream(writer, ctx.redelivered, self.capture)
        # A class set up here (first use of a version in this process) logs to the
        # worker's log, not into what the invocation printed.
        self.runner.prepare(fn)
        with context.running(ctx), self.capture(logs):
            try:
                with self.stopping.handler_running():
                    output = self.runner.run(fn, raw_input, files, stream)
            except BaseException:
                if stream is not None:
                    stream.close(quiet=True)
                raise
            if stream is not None:
                stream.close()
            return output

    def start(self, invocation_id: str, slot: Slot | None = None) -> tuple[int, bool] | None:
        """Mark an attempt started: (attempt number, whether a lost attempt preceded it),
        or None when the invocation must not run (cancelled, finished, unknown, or parked
        until a ``slot`` of its function's concurrency is free)."""
        values = start_args(
            invocation_id, os.getpid(), metrics=self.settings.metrics.enabled, slot=slot
        )
        answer = self.scripts.call(START, **values)
        return self.started(invocation_id, answer)

    def queue_start(self, pipe: Pipeline, invocation_id: str) -> None:
        """:meth:`start`, queued on ``pipe``; :meth:`started` reads its answer."""
        values = start_args(invocation_id, os.getpid(), metrics=self.settings.metrics.enabled)
        self.scripts.call(START, client=pipe, **values)

    @staticmethod
    def started(invocation_id: str, answer: list[Any]) -> tuple[int, bool] | None:
        previous, attempts, lost = answer
        if not previous:
            log.error("invocation_record_missing", invocation_id=invocation_id)
            return None
        if attempts == 0:
            log.info("invocation_skipped", invocation_id=invocation_id, status=previous)
            return None
        return int(attempts), bool(lost)

    def admitted(
        self,
        fn: LoadedFunction,
        invocation_id: str,
        started: float,
        begun: tuple[int, bool] | None,
    ) -> tuple[int, bool] | None:
        """(attempt number, redelivered) to run, or None: not to run, or failed because
        its workers keep dying."""
        if begun is None:
            return None
        attempt, lost = begun
        structlog.contextvars.bind_contextvars(version=fn.version, attempt=attempt)
        if lost and attempt > fn.manifest.retries.max + 1 + LOST_WORKER_ALLOWANCE:
            dead = WorkerLostError(
                f"the worker process died during each of the last {attempt - 1} attempts"
            )
            self.fail(invocation_id, dead, started, traceback=False)
            return None
        return attempt, lost

    @staticmethod
    def retry_delay(fn: LoadedFunction, exc: BaseException, attempt: int) -> float | None:
        """Seconds before the next attempt, or None when ``exc`` ends the invocation. An
        attempt stopped by its worker's shutdown runs again at once, whatever its retries;
        a training whose files do not deploy would make the same files again."""
        if isinstance(exc, WorkerStopping):
            return 0.0
        if isinstance(exc, TrainingError):
            return None
        retries = fn.manifest.retries
        names = {cls.__name__ for cls in type(exc).__mro__}
        if attempt > retries.max or not names & set(retries.on):
            return None
        return float(retries.backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))

    def mark_retrying(
        self,
        invocation_id: str,
        exc: BaseException,
        started: float,
        delay: float,
        *,
        logs: str = "",
        folder: Path | None = None,
        requeue: Requeue | None = None,
    ) -> None:
        """Mark the attempt failed and to be retried, with ``requeue``, its message, in the
        same step."""
        self.transition(
            invocation_id,
            (InvocationStatus.RUNNING,),
            InvocationStatus.RETRYING,
            error=json.dumps(error_payload(exc, folder=folder)),
            logs=logs,
            requeue=requeue,
        )
        self.finished(
            "retrying", started, error=repr(exc), retry_in=round(delay, 3), traceback=_full(exc)
        )

    def fail(
        self,
        invocation_id: str,
        exc: BaseException,
        started: float,
        *,
        traceback: bool = True,
        logs: str = "",
        folder: Path | None = None,
    ) -> None:
        # A bad input is the caller's to fix: the message names the field, no traceback.
        shown = traceback and not isinstance(exc, ValidationError)
        payload = error_payload(exc, with_traceback=shown, folder=folder)
        self.transition(
            invocation_id,
            (InvocationStatus.RUNNING,),
            InvocationStatus.FAILED,
            error=json.dumps(payload),
            logs=logs,
        )
        self.finished(
            "failed",
            started,
            error=f"{payload['type']}: {payload['message']}",
            **({"traceback": _full(exc)} if shown else {}),
        )

    def reporter(self, invocation_id: str) -> Callable[[float, str], None]:
        """What ``context.current().progress(...)`` calls: the record shows it while the
        invocation runs (a write that fails is only logged: progress is advisory)."""

        def report(fraction: float, message: str) -> None:
            progress = {
                "fraction": round(fraction, 4),
                "message": message,
                "updated_at": time.time(),
            }
            try:
                self.scripts.call(
                    PROGRESS,
                    record=keyspace.record(invocation_id),
                    **stream_keys(invocation_id),
                    progress=json.dumps(progress),
                    id=invocation_id,
                )
            except redis.RedisError as exc:
                log.warning("progress_not_saved", invocation_id=invocation_id, error=str(exc))

        return report

    @staticmethod
    def finished(outcome: str, started: float, **extra: Any) -> None:
        duration = round((time.monotonic() - started) * 1000, 3)
        log.info("invocation_finished", outcome=outcome, duration_ms=duration, **extra)

    # -- the supervising parent ----------------------------------------------------------

    def timed_out(self, invocation_id: str, timeout: float | None) -> None:
        """The pool ended the attempt at its hard limit (or found it gone by then)."""
        pid = cast(str | None, self.redis.hget(keyspace.record(invocation_id), "pid"))
        if pid and not alive(int(pid)):
            # A child that dies before the pool registers its job is only noticed here.
            error = {
                "type": "WorkerLostError",
                "message": f"the worker process running the attempt (pid {pid}) died",
            }
        else:
            error = hard_limit_error(timeout)
        self.transition(
            invocation_id,
            (InvocationStatus.RUNNING,),
            InvocationStatus.FAILED,
            error=json.dumps(error),
        )
        log.warning(
            "invocation_finished", invocation_id=invocation_id, outcome="timed_out", timeout=timeout
        )

    def worker_lost(self, invocation_id: str, request: Any = None) -> None:
        """The child running it died, or Celery cancelled the attempt when it lost the
        broker; Celery requeues the message, or kombu redelivers it from ``unacked``. A
        copy of it is kept (``request``: Celery's, in the parent) for the stranded sweep,
        which pushes it if it is found nowhere: a Redis restart at that moment can lose
        the message itself, and the record would stay queued for ever."""
        requeue = None if request is None else self._lost_copy(request)
        self.transition(
            invocation_id,
            (InvocationStatus.RUNNING,),
            InvocationStatus.QUEUED,
            requeue=requeue,
            lost="1",
        )
        log.warning("invocation_requeued", invocation_id=invocation_id, reason="worker_lost")

    def _lost_copy(self, request: Any) -> Requeue | None:
        kwargs = request.kwargs or {}
        manifest = self.manifest(str(kwargs.get("function")), str(kwargs.get("version")))
        if manifest is None or "invocation_id" not in kwargs:
            return None
        delivery = request.delivery_info or {}
        limits = manifest.limits
        inv = Invocation(
            id=str(kwargs["invocation_id"]),
            function=str(kwargs["function"]),
            version=str(kwargs["version"]),
            input=kwargs.get("input"),
            queue=str(delivery.get("routing_key") or manifest.target_queue),
            priority=manifest.queue.priority,
            timeout=limits.timeout,
            soft_timeout=limits.soft_timeout,
            training=kwargs.get("training"),
        )
        tag = str(getattr(request.message, "delivery_tag", None) or inv.id)
        queue_list, message = encode_message(
            request.task.app, inv, delivery_tag=tag, priority=delivery.get("priority")
        )
        return Requeue(queue_list, message, delivery_tag=tag, copied=True, push=False)


def retry_message(
    task: Task[Any, Any],
    fn: LoadedFunction,
    invocation_id: str,
    raw_input: Any,
    *,
    delay: float,
    attempt: int,
    training: dict[str, Any] | None = None,
    tag: str | None = None,
) -> Requeue:
    """The next attempt's message, as task.retry() would publish it: same id, queue and
    broker priority, due in ``delay`` seconds; its own delivery tag (kombu keys its unacked
    messages by tag, and this attempt's message is acknowledged only after it is queued)."""
    delivery = task.request.delivery_info or {}
    limits = fn.manifest.limits
    inv = Invocation(
        id=invocation_id,
        function=fn.name,
        version=fn.version,
        input=raw_input,
        queue=str(delivery.get("routing_key") or fn.manifest.target_queue),
        priority=fn.manifest.queue.priority,
        timeout=limits.timeout,
        soft_timeout=limits.soft_timeout,
        training=training,
    )
    tag = tag or f"{invocation_id}.{attempt + 1}"
    queue_list, message = encode_message(
        task.app, inv, countdown=delay, delivery_tag=tag, priority=delivery.get("priority")
    )
    return Requeue(queue_list, message, delivery_tag=tag, copied=True)


def _remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _full(exc: BaseException) -> str:
    """The whole traceback, for the worker's log (a result shows the function's frames)."""
    return "".join(format_exception(exc))


def bind(function: str, invocation_id: str | None, task: Task[Any, Any]) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        function=function,
        invocation_id=invocation_id,
        queue=(task.request.delivery_info or {}).get("routing_key"),
    )


def soft_limit_error(fn: LoadedFunction) -> SoftTimeLimitExceeded:
    limit = fn.manifest.limits.soft_timeout
    return SoftTimeLimitExceeded(f"the attempt ran past its soft time limit of {limit}s")


def hard_limit_error(timeout: float | None) -> dict[str, str]:
    return {
        "type": "TimeLimitExceeded",
        "message": f"the attempt ran past its hard time limit of {timeout}s; it was killed",
    }


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its parent's wait() does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
