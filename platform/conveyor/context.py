"""What a handler may ask about the invocation it is running.

    from conveyor import context

    def run(x: int) -> int:
        ctx = context.current()
        if ctx is not None and ctx.redelivered:
            ...  # a previous attempt's worker died mid-run: make side effects idempotent

``batch()`` gives one context per input, in order, inside ``predict_batch``. A long
handler says how far it is with ``context.current().progress(done, total, message="")``:
the invocation's result shows it while it runs (written a few times a second at most).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

PROGRESS_EVERY = 0.25  # seconds between progress writes (the last one, done == total, always)
MAX_MESSAGE = 200


@dataclass(frozen=True)
class InvocationContext:
    id: str
    function: str
    version: str
    attempt: int  # 1 for the first attempt
    redelivered: bool  # the previous attempt's worker died while running it
    report: Callable[[float, str], None] | None = field(default=None, compare=False, repr=False)
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
