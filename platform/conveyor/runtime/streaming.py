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
    try:
        for chunk in _values(produced):
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
        _close(produced)
    if streaming.text:
        return json.dumps("".join(texts), ensure_ascii=False)
    return "[" + ",".join(chunks) + "]"


def _values(produced: Any) -> Iterator[Any]:
    if isinstance(produced, AsyncIterator):
        loop = _loop()
        while True:
            try:
                yield loop.run_until_complete(anext(produced))
            except StopAsyncIteration:
                return
    yield from produced


def _close(produced: Any) -> None:
    """Close the generator at the yield it stopped at (its ``finally`` runs)."""
    if hasattr(produced, "aclose"):
        _loop().run_until_complete(produced.aclose())
    elif hasattr(produced, "close"):
        produced.close()


_LOOP: list[asyncio.AbstractEventLoop] = []  # one per pool child, for async generators


def _loop() -> asyncio.AbstractEventLoop:
    if not _LOOP or _LOOP[0].is_closed():
        _LOOP[:] = [asyncio.new_event_loop()]
    return _LOOP[0]
