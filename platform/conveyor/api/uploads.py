"""Reading a map request's body as it arrives: one input at a time, never the whole body.

Two forms: ``application/json`` ``{"inputs": [...], "priority"?, "webhook"?}`` (parsed
incrementally by ijson: an input is built, handed on and dropped before the next is read)
and ``application/x-ndjson`` (one input per line). Either way, :func:`items` yields
``("input", value)`` per input, in order, and the envelope's other fields as they come.
An NDJSON input comes as :class:`Line`: its value and the text it was parsed from, which
is stored as it is (serialising each value again was a quarter of the API's time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import ijson
from litestar.exceptions import ClientException

from conveyor.errors import InputTooLargeError, ValidationError

ENVELOPE = ("inputs", "priority", "webhook")


class Line:
    """An NDJSON input: its value, and its JSON text as sent."""

    __slots__ = ("text", "value")

    def __init__(self, value: Any, text: str) -> None:
        self.value = value
        self.text = text


_OPEN = ("start_map", "start_array")
_CLOSE = ("end_map", "end_array")


class BodyStream:
    """An async file over a request's byte stream, bounded, hashing what it reads."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit
        self.size = 0
        self.digest = hashlib.sha256()

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""  # ijson asks for nothing to learn the stream's type
        async for chunk in self._chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self._limit:
                raise InputTooLargeError(
                    f"the body is over {self._limit} bytes ([map] max_body_bytes); split the job"
                )
            self.digest.update(chunk)
            return chunk
        return b""


async def items(body: BodyStream, media: str) -> AsyncIterator[tuple[str, Any]]:
    if media == "application/x-ndjson":
        async for pair in _ndjson(body):
            yield pair
    else:
        async for pair in _json(body):
            yield pair


async def _ndjson(body: BodyStream) -> AsyncIterator[tuple[str, Any]]:
    pending, line_number = b"", 0
    while chunk := await body.read(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line_number += 1
            if line.strip():
                yield "input", _line(line, line_number)
    if pending.strip():
        yield "input", _line(pending, line_number + 1)


def _line(line: bytes, number: int) -> Line:
    try:
        text = line.decode().strip().lstrip("\ufeff")  # a BOM, as some exports begin
        return Line(json.loads(text, parse_constant=_not_json), text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClientException(f"line {number} of the body is not JSON: {exc}") from None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


async def _json(body: BodyStream) -> AsyncIterator[tuple[str, Any]]:
    builder: ijson.ObjectBuilder | None = None
    depth, field = 0, ""
    try:
        async for prefix, event, value in ijson.parse_async(body, use_float=True):
            if builder is not None:
                builder.event(event, value)
                depth += (event in _OPEN) - (event in _CLOSE)
                if depth == 0:
                    yield field, builder.value
                    builder = None
                continue
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
                yield field, builder.value
                builder = None
    except ijson.JSONError as exc:
        if "integer overflow" in str(exc):
            raise ClientException(
                "the body has an integer beyond 64 bits, which a JSON map body cannot carry;"
                " send the inputs as application/x-ndjson, or the number as a string"
            ) from None
        raise ClientException(f"the body is not valid JSON: {exc}") from None


def _bad(message: str, field: str = "body") -> ValidationError:
    return ValidationError(
        f"invalid map request: {message}", [{"field": field, "message": message}]
    )
