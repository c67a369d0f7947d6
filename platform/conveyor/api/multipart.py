"""``multipart/form-data`` on invoke: a part ``input`` (the JSON input; ``priority`` and
``webhook`` parts may come too) and one part per file field, named by the field
(``photo``, or ``photos.0`` inside a list). File parts are streamed into the file store as
they arrive (python-multipart's streaming parser, a MiB at a time through a thread), never
held; the other parts are small, and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from litestar.exceptions import ClientException
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from conveyor.errors import FileInputError, InputTooLargeError, ValidationError
from conveyor.files import refs
from conveyor.files.db import FileMeta
from conveyor.files.intake import PIECE, FileIntake
from conveyor.files.store import Budget, FileWriter
from conveyor.functions.loader import FunctionSchemas
from conveyor.integers import whole_number
from conveyor.nesting import check_portable, check_text

FIELDS = ("input", "priority", "webhook")  # the parts that are JSON, not files
MAX_FILES = 64  # file parts one invoke may carry


def is_multipart(content_type: str) -> bool:
    return content_type.split(";", maxsplit=1)[0].strip().lower() == "multipart/form-data"


@dataclass
class _Part:
    name: str = ""
    filename: str = ""
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)
    writer: FileWriter | None = None


@dataclass
class Form:
    """What a multipart invoke carried: the request body and the files it stored."""

    body: dict[str, Any]
    files: dict[refs.Path, FileMeta]


async def read_form(
    stream: AsyncIterator[bytes],
    content_type: str,
    intake: FileIntake,
    *,
    owner: str | None,
    limit: int,
    depth: int,
    budget: Budget | None = None,
) -> Form:
    """Parse the parts; the files are stored and ``body["input"]`` holds their references.
    On any error the files stored so far are removed."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ClientException("multipart/form-data needs a boundary parameter")
    events: list[tuple[str, Any]] = []
    headers: dict[str, bytes] = {}
    current: dict[str, bytes] = {"field": b""}

    def header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        name = current["field"].decode("latin-1").lower()
        headers[name] = headers.get(name, b"") + data[start:end]

    def header_end() -> None:
        current["field"] = b""

    def headers_finished() -> None:
        events.append(("part", dict(headers)))
        headers.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_headers_finished": headers_finished,
            "on_part_data": lambda data, start, end: events.append(("data", data[start:end])),
            "on_part_end": lambda: events.append(("end", None)),
        },
    )
    form = _Collector(intake, owner, limit, budget)
    try:
        async for chunk in stream:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ClientException(f"the multipart body does not parse: {exc}") from None
            await form.handle(events)
            events.clear()
        parser.finalize()
        await form.handle(events)
        return form.result(depth)
    except BaseException:
        await form.discard()
        raise


class _Collector:
    def __init__(
        self, intake: FileIntake, owner: str | None, limit: int, budget: Budget | None
    ) -> None:
        self.intake, self.owner, self.limit, self.budget = intake, owner, limit, budget
        self.part: _Part | None = None
        self.fields: dict[str, bytes] = {}
        self.files: dict[refs.Path, FileMeta] = {}
        self.writers: list[FileWriter] = []

    async def handle(self, events: list[tuple[str, Any]]) -> None:
        for kind, value in events:
            if kind == "part":
                self.part = await self._begin(value)
            elif kind == "data" and self.part is not None:
                await self._data(self.part, value)
            elif kind == "end" and self.part is not None:
                await self._end(self.part)
                self.part = None

    async def _begin(self, headers: dict[str, bytes]) -> _Part:
        _, options = parse_options_header(headers.get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise ClientException("every multipart part needs a name (Content-Disposition)")
        part = _Part(
            name=name,
            filename=options.get(b"filename", b"").decode("utf-8", "replace"),
            content_type=headers.get("content-type", b"").decode("latin-1"),
        )
        if name not in FIELDS:
            if len(self.writers) >= MAX_FILES:
                raise InputTooLargeError(f"more than {MAX_FILES} file parts in one invoke")
            part.writer = await self.intake.new_upload(
                owner=self.owner,
                filename=part.filename,
                content_type=refs.base_type(part.content_type),
                budget=self.budget,
            )
            self.writers.append(part.writer)
        return part

    async def _data(self, part: _Part, data: bytes) -> None:
        part.data += data
        if part.writer is None:
            if len(part.data) > self.limit:
                raise InputTooLargeError(
                    f"the {part.name!r} part is over {self.limit} bytes, what this function"
                    " accepts as input ([limits] max_input_bytes)"
                )
        elif len(part.data) >= PIECE:
            await asyncio.to_thread(part.writer.write, bytes(part.data))
            part.data.clear()

    async def _end(self, part: _Part) -> None:
        if part.writer is None:
            self.fields[part.name] = bytes(part.data)
            return
        await asyncio.to_thread(part.writer.write, bytes(part.data))
        path = _path(part.name)
        if path in self.files:
            raise FileInputError(refs.field_name(path), "sent twice")
        self.files[path] = await asyncio.to_thread(part.writer.finish)

    def result(self, depth: int) -> Form:
        body = {name: _json(name, text, depth) for name, text in self.fields.items()}
        # A form has no null part: one left out is null (the function's schema says whether
        # null is an input of it; if not, the 422 names the field).
        body.setdefault("input", None)
        for path, meta in self.files.items():
            try:
                body["input"] = refs.replace(body["input"], path, refs.ref(meta.id))
            except (KeyError, IndexError, TypeError):
                raise FileInputError(
                    refs.field_name(path),
                    "the part names no place in the input (a list's item must be in the"
                    " 'input' part already, e.g. null)",
                ) from None
        return Form(body, self.files)

    async def discard(self) -> None:
        for writer in self.writers:
            await asyncio.to_thread(writer.abort)  # those still being written
        for meta in self.files.values():
            await asyncio.to_thread(self.intake.store.remove, meta.id)


def check_parts(form: Form, schemas: FunctionSchemas) -> None:
    """Every file part must stand for a file field of the input."""
    if not form.files:
        return
    fields = {f.path for f in refs.file_fields(schemas.input, schemas.defs, form.body["input"])}
    for path in form.files:
        if path not in fields:
            raise FileInputError(
                refs.field_name(path), "the function's input has no file field here"
            )


def _path(name: str) -> refs.Path:
    return tuple(_index_or_name(p) for p in name.split("."))


def _index_or_name(part: str) -> int | str:
    index = whole_number(part)
    return part if index is None else index


def _json(name: str, text: bytes, depth: int) -> Any:
    """A part's value: its JSON; an input part that is not JSON but text is that string
    (as a form's text field sends it; the function's schema says whether it is an input)."""
    check_text(text, depth)
    try:
        value = json.loads(text)
        check_portable(value, name, text)
        return value
    except (ValueError, UnicodeDecodeError) as exc:
        if name == "input":
            with contextlib.suppress(UnicodeDecodeError):
                return text.decode("utf-8")
        raise ValidationError(
            f"the {name!r} part is not JSON: {exc}",
            [{"field": name, "message": "not JSON", "type": "json"}],
        ) from None
