"""``/files``: upload a file, read it (ranges too), delete it; and the helpers the other
controllers use to speak of files (the API's base URL, data URIs for ``?files=``).

A file belongs to the key that uploaded it, or to the key of the invocation that made it
(an output); other keys get a 403, as for results. The bytes are streamed both ways, a
MiB at a time through a thread (:mod:`conveyor.files.store`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Controller, HttpMethod, Request, Response, delete, get, post, route
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import FromPath
from litestar.response import Stream

from conveyor.api.params import takes
from conveyor.api.services import Platform
from conveyor.auth.caller import Caller
from conveyor.errors import FileNotFoundInStoreError, FileTooLargeError
from conveyor.files import refs
from conveyor.files.db import FileMeta
from conveyor.files.store import Budget
from conveyor.integers import whole_number
from conveyor.results import iso

INLINE_LIMIT = 256 * 1024  # ?files=data_uri inlines outputs up to this size
SEND = 256 * 1024  # a download's pieces, as handed to the transport
_RANGE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$", re.ASCII)


def base_url(platform: Platform, request: Request[Any, Any, Any]) -> str:
    """Where clients reach this API: ``[api] public_url``, else the request's own base."""
    return platform.settings.api.public_url or str(request.base_url).rstrip("/")


def own_hosts(platform: Platform, request: Request[Any, Any, Any]) -> set[str]:
    """The host names under which a file URL is one of this platform's."""
    hosts = {request.headers.get("host", "").lower()}
    if platform.settings.api.public_url:
        hosts.add(urlsplit(platform.settings.api.public_url).netloc.lower())
    return hosts - {""}


def file_body(meta: FileMeta, base: str) -> dict[str, Any]:
    return {
        "id": meta.id,
        "url": refs.file_url(base, meta.id),
        "size": meta.size,
        "sha256": meta.sha256,
        "content_type": meta.content_type,
        "filename": meta.filename or None,
        "expires_at": iso(meta.expires_at),
    }


async def readable(platform: Platform, caller: Caller, file_id: str) -> FileMeta:
    """A file the caller may read: unknown, expired or deleted is a 404, another key's a 403."""
    meta = None
    if refs.valid_id(file_id):
        meta = await platform.files.get(file_id)
    if meta is None or meta.expired():
        raise FileNotFoundInStoreError(f"no file {file_id} (never uploaded, expired or deleted)")
    if not caller.owns(meta.owner or None):
        raise caller.denied("admin", f"file {file_id} was made with another key")
    return meta


async def inline_files(
    platform: Platform, caller: Caller, files: list[dict[str, Any]]
) -> dict[str, str]:
    """``?files=data_uri``: each output file up to :data:`INLINE_LIMIT` that the caller
    may read (as ``GET /files/{id}`` would let it) as a data URI; others stay URLs."""
    inline: dict[str, str] = {}
    for listed in files:
        if listed.get("size", INLINE_LIMIT + 1) > INLINE_LIMIT:
            continue
        meta = await platform.files.get(listed["id"])
        if meta is not None and caller.owns(meta.owner or None):
            data = await asyncio.to_thread(platform.files.store.small, meta)
            inline[meta.id] = refs.data_uri(meta.content_type, data)
    return inline


async def discard(platform: Platform, made: list[str]) -> None:
    """Remove the files a request stored before it was refused."""
    for file_id in made:
        await asyncio.to_thread(platform.files.store.remove, file_id)
    made.clear()


async def admit_files(
    platform: Platform, caller: Caller, takes_files: bool, function: str = ""
) -> Budget:
    """Before a request stores any byte: Redis under its memory cap, and the caller's key
    within its limits (a request it would refuse later fetches nothing); what the request
    may then store (:class:`Budget`)."""
    if takes_files:
        platform.invocations.refuse_when_full()
        if caller.key is not None and caller.key.limits.any:
            await platform.invocations.check_key(function, caller.owner, caller.key.limits)
    return platform.files.budget(caller.owner, caller.key.limits if caller.key else None)


class FilesController(Controller):
    path = "/files"
    opt = takes()

    # As FunctionsController.allow_result_methods: Litestar 2 would list one handler's.
    @route(
        "/{file_id:str}",
        http_method=[HttpMethod.OPTIONS],
        status_code=204,
        include_in_schema=False,
    )
    async def allow_file_methods(self) -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS"})

    @post(
        "/",
        summary="Upload a file (the raw body)",
        status_code=201,
        request_max_body_size=None,
        opt=takes("filename"),
    )
    async def upload(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
    ) -> Response[dict[str, Any]]:
        limit = platform.settings.files.max_bytes
        length = request.headers.get("content-length", "")
        bodyless = length in ("", "0") and "transfer-encoding" not in request.headers
        if bodyless and "content-type" not in request.headers:  # (an empty file has a type)
            raise ClientException("no body: send the file's bytes, with their Content-Type")
        size = whole_number(length)
        if size is not None and size > limit:
            raise FileTooLargeError(
                f"the file is {length} bytes, more than [files] max_bytes ({limit})"
            )
        if caller.key is not None and not caller.key.uploads:
            raise caller.denied("files:write", "uploading a file")
        platform.invocations.refuse_when_full()
        meta = await platform.files.upload(
            request.stream(),
            owner=caller.owner,
            filename=request.query_params.get("filename", ""),
            content_type=refs.base_type(request.headers.get("content-type")),
            budget=platform.files.budget(caller.owner, caller.key.limits if caller.key else None),
        )
        body = file_body(meta, base_url(platform, request))
        return Response(body, status_code=201, headers={"Location": body["url"]})

    @get("/{file_id:str}", summary="Read a file (Range requests too)")
    async def read(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        file_id: FromPath[str],
    ) -> Response[Any]:
        meta = await readable(platform, caller, file_id)
        etag = f'"{meta.sha256}"'
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, max-age=3600",
            "Content-Disposition": _disposition(meta),
            # (nosniff: the browser guard says it on every response.) A caller's file is
            # never a page of this origin: no script runs in it, and it is its own origin
            # (a stored HTML or SVG file cannot read the dashboard's key).
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(b"", status_code=304, headers=headers)
        start, end, status = 0, meta.size, 200
        wanted = request.headers.get("range")
        span = _range(wanted, meta.size) if wanted else IGNORED
        if span is not IGNORED and request.headers.get("if-range", etag) == etag:
            if span is None:
                headers["Content-Range"] = f"bytes */{meta.size}"
                return Response(b"", status_code=416, headers=headers)
            start, end, status = *span, 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{meta.size}"
        headers["Content-Length"] = str(end - start)
        return Stream(
            platform.open_responses.hold(caller.owner, _pieces(platform, meta, start, end)),
            status_code=status,
            media_type=meta.content_type,
            headers=headers,
        )

    @delete("/{file_id:str}", summary="Delete a file", status_code=204)
    async def remove(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        file_id: FromPath[str],
    ) -> None:
        meta = await readable(platform, caller, file_id)
        await asyncio.to_thread(platform.files.store.remove, meta.id)


IGNORED = (0, -1)  # a Range this server does not take: answered with the whole file


def _range(header: str, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` (one range) as [start, end); None when it cannot be met;
    :data:`IGNORED` for a form not served (several ranges), which RFC 9110 lets a server
    answer with the whole file."""
    match = _RANGE.match(header.strip())
    if match is None or (not match[1] and not match[2]):
        return IGNORED
    if match[1] and match[2] and int(match[2]) < int(match[1]):
        return IGNORED  # not a valid range: ignored, as RFC 9110 says
    if not match[1]:  # the last N bytes
        count = int(match[2])
        return (max(size - count, 0), size) if count and size else None
    start = int(match[1])
    end = min(int(match[2]) + 1, size) if match[2] else size
    return (start, end) if start < size and start < end else None


ACTIVE = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml")


def _disposition(meta: FileMeta) -> str:
    """Shown in the browser (an image, a sound), but saved if it is a kind of document
    that could run script."""
    name = meta.filename or f"{meta.id}{refs.extension(meta.content_type)}"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "")
    how = "attachment" if refs.base_type(meta.content_type) in ACTIVE else "inline"
    return f"{how}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


async def _pieces(platform: Platform, meta: FileMeta, start: int, end: int) -> AsyncIterator[bytes]:
    """The bytes with back-pressure: one chunk read at a time, sent in quarters, each sent
    only once the transport took the one before (a reader that stalls holds one chunk)."""
    reader: Iterator[bytes] = platform.files.store.read(meta, start, end, ahead=1)
    try:
        while piece := await asyncio.to_thread(next, reader, b""):
            view = memoryview(piece)
            for at in range(0, len(view), SEND):
                yield bytes(view[at : at + SEND])
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
