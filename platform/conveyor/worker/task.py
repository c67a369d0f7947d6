"""The one generic Celery task, and the request hooks its supervising parent runs.

One task for every function (docs/ARCHITECTURE.md, "One generic task"): Celery's worker
drops messages for task names it did not register at start-up, so a task per function
could not be hot-added. The message carries the function name and version; ``shadow``
shows the function in logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from billiard.einfo import ExceptionWithTraceback  # type: ignore[attr-defined]
from celery import Celery, Task
from celery.exceptions import Terminated, TimeLimitExceeded, WorkerLostError
from celery.worker.request import Request
from redis.exceptions import RedisError

from conveyor.broker.app import BATCH_TASK_NAME, MAP_TASK_NAME, TASK_NAME
from conveyor.log import get_logger
from conveyor.worker.batches import Batches
from conveyor.worker.chunks import Chunks
from conveyor.worker.executor import Executor

log = get_logger(__name__)


def register_task(app: Celery, executor: Executor) -> None:
    """Register ``conveyor.run``, ``conveyor.batch`` and ``conveyor.map`` on ``app``."""
    executor.app = app
    batches = Batches(executor, app)
    chunks = Chunks(executor, app)

    class ConveyorRequest(Request):
        """Runs in the supervising parent, which alone sees hard limits and dead children."""

        def on_timeout(self, soft: bool, timeout: float) -> None:
            if getattr(self, "_already_cancelled", False):
                return  # see on_failure
            super().on_timeout(soft, timeout)

        def on_failure(
            self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
        ) -> None:
            batch = self.task.name == BATCH_TASK_NAME  # self.name is the shadow name
            if self.task.name == MAP_TASK_NAME:
                self._chunk_failed(exc_info, send_failed_event, return_ok)
                return
            if getattr(self, "_already_cancelled", False):
                # Celery cancelled the attempt (it lost the broker) and leaves the message
                # unacked for redelivery. billiard's timer may still report the job timed
                # out: acking or failing it then would lose the invocation.
                if batch:
                    _record(batches.lost, self.id)
                else:
                    _record(executor.worker_lost, self.id, self)
                return
            # Celery acks the message of a timed-out attempt and requeues that of a lost
            # child; the record must follow, or a 'running' invocation would never finish.
            super().on_failure(exc_info, send_failed_event, return_ok)
            exc = exc_info.exception
            if isinstance(exc, ExceptionWithTraceback):
                exc = exc.exc
            if isinstance(exc, TimeLimitExceeded):
                timeout = exc.args[0] if exc.args else None
                _record(batches.timed_out if batch else executor.timed_out, self.id, timeout)
            elif isinstance(exc, WorkerLostError):
                if batch:
                    _record(batches.lost, self.id)
                else:
                    _record(executor.worker_lost, self.id, self)

        def _chunk_failed(self, exc_info: Any, send_failed_event: bool, return_ok: bool) -> None:
            if getattr(self, "_already_cancelled", False):
                _record(chunks.keep_copy, self)  # lost the broker: redelivered as it is
                return
            super().on_failure(exc_info, send_failed_event, return_ok)
            exc = exc_info.exception
            if isinstance(exc, ExceptionWithTraceback):
                exc = exc.exc
            if isinstance(exc, TimeLimitExceeded):
                timeout = exc.args[0] if exc.args else None
                _record(chunks.timed_out, self.id, self.kwargs, timeout)
            elif isinstance(exc, WorkerLostError | Terminated):  # died, or killed by a cancel
                _record(chunks.lost, self.id, self.kwargs)

    # Every task: acknowledged after the outcome is stored, requeued if the child dies.
    options: dict[str, Any] = {
        "bind": True,
        "Request": ConveyorRequest,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "ignore_result": True,
        "max_retries": None,
    }

    @app.task(name=TASK_NAME, **options)
    def run(  # noqa: PLR0917
        self: Task[Any, Any],
        invocation_id: str,
        function: str,
        version: str,
        input: Any,
        training: dict[str, Any] | None = None,
    ) -> None:
        executor.execute(self, invocation_id, function, version, input, training)

    @app.task(name=BATCH_TASK_NAME, **options)
    def batch(self: Task[Any, Any], function: str, version: str) -> None:
        batches.drain(self, function, version)

    @app.task(name=MAP_TASK_NAME, **options)
    def map_chunk(self: Task[Any, Any], job: str, function: str, version: str, chunk: int) -> None:
        chunks.run(self, job, function, version, chunk)


def _record(hook: Callable[..., None], *args: Any) -> None:
    """Run a parent-side hook; Redis may be what failed, and Celery must not see that.
    A record left 'running' is redelivered and restarted anyway."""
    try:
        hook(*args)
    except RedisError as exc:
        log.warning("record_update_failed", hook=hook.__name__, error=str(exc))
