"""A warm shutdown's grace for running handlers (``[worker] shutdown_grace``).

Celery's warm shutdown (SIGTERM to the worker) stops taking messages and waits for what
runs, however long that is. A pool child is told at once (the parent sends it
:data:`STOP_SIGNAL`): ``ctx.stopping`` becomes true, and an attempt still running its
handler ``shutdown_grace`` seconds later is stopped (:class:`~conveyor.errors.WorkerStopping`
raised in it, as a soft time limit is) and queued again for another worker, where it
resumes from its last checkpoint. A handler that checkpoints while stopping ends there: its
state is saved, nothing is gained by running on.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Iterator
from types import FrameType

from conveyor import context
from conveyor.errors import WorkerStopping
from conveyor.log import get_logger

log = get_logger(__name__)

STOP_SIGNAL = signal.SIGUSR2  # parent to pool child: the worker is shutting down


class Stopping:
    """One pool child's side (installed when it starts)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.running = False  # a handler is running now (not the executor's bookkeeping)
        self.armed = False

    def install(self) -> None:
        """In a pool child's main thread (elsewhere there is nothing to stop)."""
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(STOP_SIGNAL, self._on_stop)
            signal.signal(signal.SIGALRM, self._on_grace_over)

    @contextlib.contextmanager
    def handler_running(self) -> Iterator[None]:
        self.running = True
        if context.current_stopping():
            self._arm()
        try:
            yield
        finally:
            self.running = False

    def _arm(self) -> None:
        if not self.armed:
            self.armed = True
            signal.setitimer(signal.ITIMER_REAL, max(self.grace, 0.001))

    def _on_stop(self, _signum: int, _frame: FrameType | None) -> None:
        context.stop_soon()
        if self.running:
            self._arm()

    def _on_grace_over(self, _signum: int, _frame: FrameType | None) -> None:
        if self.running:
            raise WorkerStopping(
                f"the worker shut down; the attempt ran past [worker] shutdown_grace"
                f" ({self.grace:g} s) and was queued again"
            )


def tell_children(pids: Iterable[int]) -> None:
    """In the parent, as its warm shutdown begins: every pool child is stopping."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, STOP_SIGNAL)
