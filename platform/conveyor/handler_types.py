"""The types a handler declares: files (:class:`File`, :class:`Accept`) and streams
(:class:`TextStream`).

A field typed ``File`` (or plain ``pathlib.Path``) is a file input: its JSON Schema is
``{"type": "string", "format": "uri"}`` marked with :data:`FILE_MARK`, which the API reads
to know which fields to resolve. ``Annotated[File, Accept("image/*")]`` adds
``contentMediaType``, checked against the file's declared type and its leading bytes.

A handler that is a generator streams: each value it yields is one chunk of its output.
Annotated ``-> TextStream`` its chunks are strings and its final output their joined text.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

FILE_MARK = "x-conveyor-file"  # in a schema: this string is a file (a URL or a data URI)
FILE_SCHEMA: dict[str, Any] = {"type": "string", "format": "uri", FILE_MARK: True}


class TextStream(Iterator[str]):
    """What a text-generating handler returns (``-> TextStream``): an iterator of ``str``.
    Each string is streamed as it is yielded; the result's output is their joined text."""


class File(pathlib.PosixPath):
    """A file on the worker's disk, with what the caller said of it. A handler may also
    return one (or any ``pathlib.Path``): the platform stores it and answers its URL."""

    content_type: str | None = None
    filename: str | None = None
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def of(
        cls,
        path: str | pathlib.Path,
        *,
        content_type: str | None = None,
        filename: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
    ) -> File:
        file = cls(path)
        file.content_type, file.filename, file.size, file.sha256 = (
            content_type,
            filename,
            size,
            sha256,
        )
        return file

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(FILE_SCHEMA)


def _validate(value: Any) -> File:
    if isinstance(value, File):
        return value
    if isinstance(value, pathlib.Path):
        return File(value)
    raise ValueError("expected a file: a URL, a data URI or an uploaded file's URL")


@dataclass(frozen=True)
class Accept:
    """The media types a file field takes (``"image/*"``, ``"audio/wav"`` ...)."""

    types: tuple[str, ...]

    def __init__(self, *types: str) -> None:
        if not types or not all(isinstance(t, str) and "/" in t for t in types):
            raise ValueError('Accept takes media types such as "image/*" or "audio/wav"')
        object.__setattr__(self, "types", tuple(t.strip().lower() for t in types))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        found = dict(handler(schema))
        found["contentMediaType"] = ", ".join(self.types)
        return found


def mark_paths(node: Any) -> Any:
    """``node`` (a JSON Schema) with pydantic's ``pathlib.Path`` (``format: path``) written
    as a file, as ``File`` is: a plain ``Path`` input or output is a file too."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "path":
            return {**{k: v for k, v in node.items() if k != "format"}, **FILE_SCHEMA}
        return {key: mark_paths(value) for key, value in node.items()}
    if isinstance(node, list):
        return [mark_paths(value) for value in node]
    return node
