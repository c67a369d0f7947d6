"""What a handler may ask about the invocation it is running.

    from conveyor import context

    def run(x: int) -> int:
        ctx = context.current()
        if ctx is not None and ctx.redelivered:
            ...  # a previous attempt's worker died mid-run: make side effects idempotent

``batch()`` gives one context per input, in order, inside ``predict_batch``. A long
handler says how far it is with ``context.current().progress(done, total, message="")``:
the invocation's result shows it while it runs (written a few times a second at most).

A long handler saves its state so that a lost worker costs only the work since::

    ctx = context.current()
    state = ctx.checkpoint_dir / "state.pt"
    start = torch.load(state)["epoch"] + 1 if ctx.resumed else 0
    for epoch in range(start, epochs):
        ...
        torch.save({"epoch": epoch, ...}, state)
        ctx.checkpoint()  # stored before it returns; while the worker stops, the attempt
                          # ends here and another worker resumes it

A training (``[training]``) writes the files of the new version into ``ctx.output_dir``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from conveyor.errors import WorkerStopping

PROGRESS_EVERY = 0.25  # seconds between progress writes (the last one, done == total, always)
MAX_MESSAGE = 200


class Checkpointer(Protocol):
    """An attempt's checkpoints (the worker's ``worker/checkpoints.py``)."""

    @property
    def directory(self) -> Path: ...

    @property
    def resumed(self) -> bool: ...

    def save(self) -> None: ...


_stopping = [False]  # this process's worker is shutting down (set in its pool children)


def stop_soon() -> None:
    """The worker is shutting down: every running handler's ``ctx.stopping`` is true."""
    _stopping[0] = True


def current_stopping() -> bool:
    return _stopping[0]


@dataclass(frozen=True)
class InvocationContext:
    id: str
    function: str
    version: str
    attempt: int  # 1 for the first attempt
    redelivered: bool  # the previous attempt's worker died while running it
    report: Callable[[float, str], None] | None = field(default=None, compare=False, repr=False)
    checkpoints: Checkpointer | None = field(default=None, compare=False, repr=False)
    output_dir: Path | None = None  # a training's: the new version's files go here
    _last_report: list[float] = field(default_factory=lambda: [0.0], compare=False, repr=False)

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """How far this invocation is: ``done`` of ``total`` (or, without ``total``, a
        fraction from 0 to 1), and what it is doing."""
        fraction = done / total if total else done
        fraction = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if self.report is None or (fraction < 1 and now - self._last_report[0] < PROGRESS_EVERY):
            return
        self._last_report[0] = now
        self.report(fraction, str(message)[:MAX_MESSAGE])

    @property
    def checkpoint_dir(self) -> Path:
        """A local directory whose contents :meth:`checkpoint` saves; when this attempt
        resumes (:attr:`resumed`), it holds the last saved checkpoint."""
        return self._checkpointer().directory

    @property
    def resumed(self) -> bool:
        """A previous attempt saved a checkpoint, restored into :attr:`checkpoint_dir`."""
        return self.checkpoints is not None and self.checkpoints.resumed

    @property
    def stopping(self) -> bool:
        """The worker is shutting down: checkpoint and return (or be stopped after its
        ``[worker] shutdown_grace`` seconds); the invocation is run again elsewhere."""
        return _stopping[0]

    def checkpoint(self) -> None:
        """Save :attr:`checkpoint_dir` (to the file store, for this invocation) before
        returning; a later attempt starts from it. At most ``[limits]
        max_checkpoint_bytes``: past it, :class:`~conveyor.errors.CheckpointError`. While
        the worker is :attr:`stopping`, the attempt ends here once it is saved, and the
        invocation is queued again."""
        self._checkpointer().save()
        if _stopping[0]:
            raise WorkerStopping(
                "the worker shut down; the attempt checkpointed and was queued again"
            )

    def _checkpointer(self) -> Checkpointer:
        if self.checkpoints is None:
            raise RuntimeError(
                "checkpoints are kept for single invocations and trainings, not for the"
                " items of a batch or a map job"
            )
        return self.checkpoints


_current: ContextVar[InvocationContext | None] = ContextVar("conveyor_invocation", default=None)
_batch: ContextVar[tuple[InvocationContext, ...]] = ContextVar("conveyor_batch", default=())


def current() -> InvocationContext | None:
    """The invocation being run (None outside one, and inside ``predict_batch``)."""
    return _current.get()


def batch() -> tuple[InvocationContext, ...]:
    """Inside ``predict_batch``: one context per input, in order."""
    return _batch.get()


@contextmanager
def running(ctx: InvocationContext) -> Iterator[None]:
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def running_batch(contexts: tuple[InvocationContext, ...]) -> Iterator[None]:
    token = _batch.set(contexts)
    try:
        yield
    finally:
        _batch.reset(token)
