"""What a handler may ask about the invocation it is running.

    from conveyor import context

    def run(x: int) -> int:
        ctx = context.current()
        if ctx is not None and ctx.redelivered:
            ...  # a previous attempt's worker died mid-run: make side effects idempotent

``batch()`` gives one context per input, in order, inside ``predict_batch``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class InvocationContext:
    id: str
    function: str
    version: str
    attempt: int  # 1 for the first attempt
    redelivered: bool  # the previous attempt's worker died while running it


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
