"""Reading a map request's body as it arrives: one input at a time, never the whole body.

Two forms: ``application/json`` ``{"inputs": [...], "priority"?, "webhook"?}`` (parsed
incrementally by ijson: an input is built, handed on and dropped before the next is read)
and ``application/x-ndjson`` (one input per line). The JSON form goes through ijson's
pure-Python parser: it carries integers of any size, as JSON and NDJSON bodies elsewhere do
(the C one stops at 64 bits), at a CPU cost that matters only for large jobs, which send
NDJSON (as ``conveyor map`` does). Either way, :func:`items` yields
``("input", value)`` per input, in order, and the envelope's other fields as they come.
An NDJSON input comes as :class:`Line`: its value and the text it was parsed from, which
is stored as it is (serialising each value again was a quarter of the API's time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ijson
from ijson.backends import python as ijson_python
from litestar.exceptions import ClientException

from conveyor.errors import InputTooLargeError, ValidationError
from conveyor.nesting import check_portable, check_text, too_deep

ENVELOPE = ("inputs", "priority", "webhook")
NDJSON = "application/x-ndjson"
CHUNK = 65536
PAUSE_EVERY = 4 * 1024 * 1024  # bytes of one item handled between two looks at the loop


class Line:
    """An NDJSON input: its value, and its JSON text as sent."""

    __slots__ = ("text", "value")

    def __init__(self, value: Any, text: str) -> None:
        self.value = value
        self.text = text


_OPEN = ("start_map", "start_array")
_CLOSE = ("end_map", "end_array")


@dataclass(frozen=True)
class ItemLimits:
    """What one input may be: its JSON text's bytes (the function's ``[limits]
    max_input_bytes``) and its nesting (``[api] max_json_depth``)."""

    max_bytes: int
    max_depth: int

    def too_large(self, index: int) -> InputTooLargeError:
        return InputTooLargeError(
            f"item {index} is over {self.max_bytes} bytes, the function's [limits]"
            " max_input_bytes; send large data by reference"
        )


class BodyStream:
    """An async file over a request's byte stream, bounded, hashing what it reads.

    A reader marks where the current item (or JSON token) began: once the bytes read since
    pass the item limit, reading stops with a 413, so no item is ever held whole past it
    (ijson would otherwise gather a 64 MiB string in memory before handing it over)."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._rest = b""  # what a read left of the last chunk
        self._limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.mark = 0  # where the item being read began
        self.item: tuple[int, ItemLimits] | None = None  # its index and limits, while read

    async def read(self, n: int = -1) -> bytes:
        """At most ``n`` bytes (a parser handles one piece between two looks at the event
        loop, however much the server had buffered)."""
        if n == 0:
            return b""  # ijson asks for nothing to learn the stream's type
        if not self._rest:
            async for chunk in self._chunks:
                if chunk:
                    self._rest = chunk
                    break
            else:
                return b""
        size = len(self._rest) if n < 0 else min(n, len(self._rest))
        piece, self._rest = self._rest[:size], self._rest[size:]
        if self.item is not None and self.size - self.mark > self.item[1].max_bytes:
            raise self.item[1].too_large(self.item[0])
        self.size += len(piece)
        if self.size > self._limit:
            raise InputTooLargeError(
                f"the body is over {self._limit} bytes ([map] max_body_bytes); split the job"
            )
        self.digest.update(piece)
        return piece


async def items(body: BodyStream, media: str, limits: ItemLimits) -> AsyncIterator[tuple[str, Any]]:
    if media == NDJSON:
        async for pair in _ndjson(body, limits):
            yield pair
    else:
        async for pair in _json(body, limits):
            yield pair


async def _ndjson(body: BodyStream, limits: ItemLimits) -> AsyncIterator[tuple[str, Any]]:
    """One input per line. Each chunk is searched once for newlines (only the new bytes:
    a long line costs its length, not its length squared), and a line is refused as soon
    as it is longer than an item may be."""
    pending, line_number, index = bytearray(), 0, 0
    while chunk := await body.read(CHUNK):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending += chunk[start:end]
            start = end + 1
            line_number += 1
            if line := await _line(pending, line_number, index, limits):
                yield "input", line
                index += 1
            pending.clear()
        pending += chunk[start:]
        if len(pending) > limits.max_bytes:
            raise limits.too_large(index)
    if line := await _line(pending, line_number + 1, index, limits):
        yield "input", line


async def _line(raw: bytearray, number: int, index: int, limits: ItemLimits) -> Line | None:
    """One line's input. A large one (up to the input limit: 64 MiB takes about 0.2 s of
    CPU to check, decode and parse) is handled a step at a time, the event loop looked at
    between steps, so other requests are answered meanwhile."""
    if not raw or raw.isspace():
        return None
    if len(raw) > limits.max_bytes:
        raise limits.too_large(index)
    large = len(raw) > PAUSE_EVERY
    where = f"item {index} (line {number})"
    if large:
        await _check_large(raw, limits.max_depth, where)
    else:
        check_text(raw, limits.max_depth, where)
    try:
        text = raw.decode()
        await _pause(large)
        text = text.strip().lstrip("\ufeff")  # a BOM, as some exports begin
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClientException(f"line {number} of the body is not JSON: {exc}") from None
    await _pause(large)
    check_portable(value, where, raw)
    return Line(value, text)


async def _check_large(raw: bytearray, limit: int, where: str) -> None:
    """:func:`check_text` of a large item: its brackets counted a piece at a time (the exact
    check runs only where there are more than ``limit`` of them)."""
    opens = 0
    for start in range(0, len(raw), PAUSE_EVERY):
        end = start + PAUSE_EVERY
        opens += raw.count(b"[", start, end) + raw.count(b"{", start, end)
        await asyncio.sleep(0)
    if opens > limit:
        check_text(raw, limit, where)


async def _pause(large: bool) -> None:
    if large:
        await asyncio.sleep(0)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


async def _json(body: BodyStream, limits: ItemLimits) -> AsyncIterator[tuple[str, Any]]:
    builder: ijson.ObjectBuilder | None = None
    depth, field, index = 0, "", 0
    events = ijson_python.parse_async(body, use_float=True)
    try:
        async for prefix, event, value in events:
            if builder is not None:
                builder.event(event, value)
                depth += (event in _OPEN) - (event in _CLOSE)
                if depth > limits.max_depth:
                    raise too_deep(limits.max_depth, f"item {index}")
                if depth == 0:
                    check_portable(builder.value, f"item {index}")
                    yield field, builder.value
                    index += field == "input"
                    builder = None
                    body.mark, body.item = body.size, (index, limits)
                continue
            body.mark, body.item = body.size, (index, limits)  # no token past the limit
            if prefix == "":
                if event == "map_key" and value not in ENVELOPE:
                    raise _bad(
                        f"{value}: not allowed here; send inputs, priority?, webhook?", value
                    )
                if event not in ("start_map", "map_key", "end_map"):
                    raise _bad('send a JSON object: {"inputs": [...]}')
                continue
            if prefix == "inputs" and event in ("start_array", "end_array"):
                continue
            if prefix == "inputs" or (prefix not in ("inputs.item", "priority", "webhook")):
                raise _bad("inputs must be a list", "inputs")
            field = "input" if prefix == "inputs.item" else prefix
            builder = ijson.ObjectBuilder()
            builder.event(event, value)
            depth = int(event in _OPEN)
            if depth == 0:
                check_portable(builder.value, f"item {index}")
                yield field, builder.value
                index += field == "input"
                builder = None
                body.mark, body.item = body.size, (index, limits)
    except (ijson.JSONError, ijson_python.UnexpectedSymbol) as exc:
        raise ClientException(f"the body is not valid JSON: {exc}") from None
    finally:
        # An upload refused mid-token leaves ijson's parser half-way: closed here, its
        # complaint about the unfinished token is not printed at garbage collection.
        with contextlib.suppress(Exception):
            events.coro.close()


def _bad(message: str, field: str = "body") -> ValidationError:
    return ValidationError(
        f"invalid map request: {message}", [{"field": field, "message": message}]
    )
