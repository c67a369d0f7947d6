"""File references and file fields: pure functions, no I/O.

A file travels as ``conveyor://files/<id>`` in messages, records and results; clients see
``<base>/files/<id>``. Which fields of an input or output are files, the version's JSON
Schema says (:data:`~conveyor.handler_types.FILE_MARK`); :func:`file_fields` finds them in
a value, :func:`replace` puts a reference in their place.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from conveyor.functions.loader import DEFS_REF
from conveyor.handler_types import FILE_MARK

REF = "conveyor://files/"
_ID = re.compile(r"^[0-9a-f]{32}$")
Path = tuple[str | int, ...]  # where in a value: keys and indexes


def new_id() -> str:
    return uuid.uuid4().hex


def ref(file_id: str) -> str:
    return REF + file_id


def valid_id(file_id: str) -> bool:
    return bool(_ID.match(file_id))


def ref_id(value: Any) -> str | None:
    """The id in a ``conveyor://files/<id>`` reference (None: not one)."""
    if isinstance(value, str) and value.startswith(REF):
        file_id = value.removeprefix(REF)
        return file_id if valid_id(file_id) else None
    return None


def url_id(value: str, own_hosts: set[str]) -> str | None:
    """The id in ``http(s)://<one of own_hosts>/.../files/<id>``: a file this platform
    serves (None: any other URL)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() not in own_hosts:
        return None
    head, _, file_id = parts.path.rpartition("/")
    return file_id if head.endswith("/files") and valid_id(file_id) else None


def file_url(base: str, file_id: str) -> str:
    return f"{base.rstrip('/')}/files/{file_id}"


@dataclass(frozen=True)
class FileField:
    """One file in a value: where it is, and the media types its field accepts."""

    path: Path
    accept: str | None

    @property
    def name(self) -> str:
        return field_name(self.path)


def field_name(path: Path) -> str:
    """A place in an input as problem details name it: ``input.photos.0``."""
    return ".".join(["input", *(str(p) for p in path)])


def file_fields(schema: Any, defs: dict[str, Any], value: Any) -> list[FileField]:
    """Every string in ``value`` that ``schema`` says is a file, once each."""
    found: dict[Path, FileField] = {}
    for field in _walk(schema, defs, value, (), 0):
        found.setdefault(field.path, field)
    return list(found.values())


MAX_DEPTH = 64


def _walk(
    schema: Any, defs: dict[str, Any], value: Any, path: Path, depth: int
) -> Iterator[FileField]:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return
    target = schema.get("$ref")
    if isinstance(target, str) and target.startswith(DEFS_REF):
        yield from _walk(defs.get(target.removeprefix(DEFS_REF)), defs, value, path, depth + 1)
    if schema.get(FILE_MARK) and isinstance(value, str):
        yield FileField(path, schema.get("contentMediaType"))
        return
    for keyword in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(keyword) or ():
            yield from _walk(branch, defs, value, path, depth + 1)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra)
            yield from _walk(sub, defs, item, (*path, key), depth + 1)
    elif isinstance(value, list):
        prefix = schema.get("prefixItems") or []
        items = schema.get("items")
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else items
            yield from _walk(sub, defs, item, (*path, i), depth + 1)


def get(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def replace(value: Any, path: Path, new: Any) -> Any:
    """``value`` with ``new`` at ``path`` (containers changed in place; the root returned)."""
    if not path:
        return new
    parent = get(value, path[:-1])
    parent[path[-1]] = new
    return value


# -- data URIs -------------------------------------------------------------------------


class DataUriError(ValueError):
    pass


def parse_data_uri(value: str) -> tuple[str, bytes]:
    """``data:[<type>][;base64],<data>``: its media type and its bytes."""
    head, comma, data = value.partition(",")
    if not head.startswith("data:") or not comma:
        raise DataUriError("a data URI is data:<type>;base64,<data>")
    params = head.removeprefix("data:").split(";")
    media = params[0].strip().lower() or "text/plain"
    if "base64" in (p.strip().lower() for p in params[1:]):
        try:
            return media, base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise DataUriError("its base64 data does not decode") from None
    return media, unquote_to_bytes(data)


def data_uri(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


# -- media types -----------------------------------------------------------------------

# Leading bytes of the formats a model is given most: enough to tell a photo from a page.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"\xff\xfb", "audio/mpeg"),
    (0, b"\xff\xf3", "audio/mpeg"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
)
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
HEAD = 64  # bytes sniffed


def sniff(head: bytes) -> str | None:
    """The media type ``head`` (a file's first bytes) shows, if it is a known one."""
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "image/avif" if brand in (b"avif", b"avis") else "video/mp4"
    for offset, magic, media in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return media
    return None


def base_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def extension(content_type: str) -> str:
    """The file-name extension of a media type (``.png``; '' when none is known)."""
    return mimetypes.guess_extension(base_type(content_type)) or ""


def matches(accept: str, content_type: str | None) -> bool:
    """``content_type`` is one of ``accept``'s types (``image/*``, ``audio/wav, audio/x-wav``)."""
    media = base_type(content_type)
    major = media.split("/")[0]
    for pattern in (p.strip().lower() for p in accept.split(",")):
        if pattern in ("*/*", media) or (pattern.endswith("/*") and pattern[:-2] == major):
            return True
    return False


SNIFFED_FAMILIES = ("image/", "audio/", "video/", "application/pdf")


def refusal(accept: str, declared: str | None, sniffed: str | None) -> str | None:
    """Why a file declared ``declared`` whose bytes look like ``sniffed`` is not what a
    field accepting ``accept`` takes (None: it is). Formats this module recognises by
    their bytes must be shown by them; others are taken at their word."""
    if sniffed is not None and not matches(accept, sniffed):
        return f"its bytes are {sniffed}, and the field accepts {accept}"
    wanted = [p.strip().lower() for p in accept.split(",")]
    if sniffed is None and any(p.startswith(SNIFFED_FAMILIES) for p in wanted):
        return f"its bytes are not a format the field accepts ({accept})"
    generic = base_type(declared) in ("", "application/octet-stream")
    if not generic and not matches(accept, declared):
        return f"it was sent as {base_type(declared)}, and the field accepts {accept}"
    return None


MAX_NAME_BYTES = 255  # what a Linux file system holds in one name


def safe_filename(filename: str) -> str:
    """A file name as a folder can hold it: its last part, printable, never ``.`` or
    ``..``, at most 255 bytes of UTF-8 (cut before its extension); '' when nothing is left
    (the platform then names the file itself)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"\r\n').strip()
    name = name.encode("utf-8", "ignore").decode("utf-8")  # unpaired surrogates dropped
    if name in (".", ".."):
        return ""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension.encode()) > 16:
        stem, extension = name, ""
    room = MAX_NAME_BYTES - len(extension.encode()) - len(dot)
    cut = stem.encode()[:room].decode("utf-8", "ignore")
    return f"{cut}.{extension}" if extension else cut
