"""A streaming handler's chunks: each one encoded, handed to a sink as it is made, and
gathered into the invocation's output.

A handler streams when it is a generator (or an async generator, or returns an iterator):
:func:`drain` takes its values one at a time. A sink (the worker's, which adds each chunk
to the invocation's stream) may stop it by raising :class:`StreamStopped`: the generator
is closed at that yield, so its ``finally`` runs, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from conveyor.errors import TextStreamError
from conveyor.functions.loader import Streaming
from conveyor.runtime.encoding import encode_output


class StreamStopped(Exception):  # noqa: N818  # not a failure: the invocation ended
    """The invocation no longer runs (it was cancelled): stop making chunks."""


class ChunkSink(Protocol):
    """Where each chunk goes as it is made."""

    def chunk(self, encoded: str) -> None:
        """Take one chunk (JSON); raise :class:`StreamStopped` to end the stream."""


def drain(
    streaming: Streaming,
    produced: Any,
    sink: ChunkSink | None,
    stored: Callable[[Any], Any] | None = None,
) -> str:
    """Every chunk of ``produced`` through ``sink``: the output (JSON), a list of the chunks
    or their joined text. ``stored``: a chunk with its files stored (each ``Path`` made a
    reference). The generator is closed however this ends."""
    chunks: list[str] = []
    texts: list[str] = []
    # an async generator runs on an event loop of its own, for this invocation
    runner = asyncio.Runner() if isinstance(produced, AsyncIterator) else None
    try:
        for chunk in _values(produced, runner):
            if streaming.text and not isinstance(chunk, str):
                raise TextStreamError(
                    f"a TextStream handler yields strings; it yielded a {type(chunk).__name__}"
                )
            encoded = encode_output(chunk if stored is None else stored(chunk))
            if sink is not None:
                sink.chunk(encoded)
            if streaming.text:
                texts.append(chunk)
            else:
                chunks.append(encoded)
    finally:
        _close(produced, runner)
    if streaming.text:
        return json.dumps("".join(texts), ensure_ascii=False)
    return "[" + ",".join(chunks) + "]"


def _values(produced: Any, runner: asyncio.Runner | None) -> Iterator[Any]:
    if runner is None:
        yield from produced
        return
    while True:
        try:
            yield runner.run(_next(produced))
        except StopAsyncIteration:
            return


async def _next(produced: AsyncIterator[Any]) -> Any:
    return await anext(produced)


def _close(produced: Any, runner: asyncio.Runner | None) -> None:
    """Close the generator at the yield it stopped at (its ``finally`` runs)."""
    if runner is None:
        if hasattr(produced, "close"):
            produced.close()
        return
    with runner:
        if hasattr(produced, "aclose"):
            runner.run(_aclose(produced))


async def _aclose(produced: Any) -> None:
    await produced.aclose()
