"""The API's side of files: uploads streamed in, and the file fields of an input resolved.

Every form a caller may put in a file field ends as a file in the store and a
``conveyor://files/<id>`` reference in the input the worker gets:

- a data URI: decoded (it came within the body's limit) and stored;
- an http(s) URL: fetched here, before anything is queued, through the SSRF guard with
  ``[files] allow_networks``, streamed into the store, capped at ``[files] max_bytes`` and
  ``fetch_timeout``; a failure is the caller's ``422`` naming the field;
- an uploaded file's ``url`` (``POST /files``) or ``conveyor://files/<id>``: checked to
  exist and to belong to the caller.

A field that declares what it accepts (``Accept("image/*")``) is checked against the
file's declared type and its leading bytes. Storing runs in threads, a piece at a time.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import redis.asyncio

from conveyor.db import keyspace
from conveyor.errors import FileInputError, FileTooLargeError
from conveyor.files import refs
from conveyor.files.db import FileMeta, get_async
from conveyor.files.refs import FileField
from conveyor.files.store import Budget, FileStore, FileWriter
from conveyor.functions.loader import FunctionSchemas
from conveyor.guard import Guard, RefusedAddressError, guarded_connector
from conveyor.settings import FilesSettings

PIECE = 1024 * 1024  # bytes handed to a storing thread at once
MAX_REDIRECTS = 5


class FileIntake:
    """Uploads and input files into the store, for one API process."""

    def __init__(
        self, settings: FilesSettings, store: FileStore, client: redis.asyncio.Redis
    ) -> None:
        self.settings = settings
        self.store = store
        self.redis = client  # the API's own: records are read without a thread
        self.guard = Guard(
            tuple(settings.allow_networks), "[files] allow_networks", "URL inputs are fetched"
        )
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def upload(
        self,
        pieces: AsyncIterator[bytes],
        *,
        owner: str | None,
        filename: str = "",
        content_type: str = "",
        ttl: float | None = None,
        budget: Budget | None = None,
    ) -> FileMeta:
        """Stream ``pieces`` into a new file; it is readable once all are stored."""
        writer = await self.new_upload(
            owner=owner, filename=filename, content_type=content_type, ttl=ttl, budget=budget
        )
        return await _fill(writer, pieces)

    async def new_upload(
        self,
        *,
        owner: str | None,
        filename: str = "",
        content_type: str = "",
        ttl: float | None = None,
        budget: Budget | None = None,
    ) -> FileWriter:
        """A new upload's writer (its record made: a thread's work), kept ``[files]
        upload_ttl`` unless ``ttl`` says otherwise; its bytes counted on ``budget``."""
        return await asyncio.to_thread(
            self.store.writer,
            kind="upload",
            owner=owner,
            ttl=self.settings.upload_ttl if ttl is None else ttl,
            filename=filename,
            content_type=content_type,
            budget=budget,
        )

    def budget(self, owner: str | None, limits: Any) -> Budget:
        """What one request of the key ``owner`` (its KeyLimits: ``limits``) may store."""
        quota = getattr(limits, "max_file_bytes", None) if owner else None
        return Budget(
            left=self.settings.max_request_bytes,
            usage=keyspace.key_usage(owner, "file-bytes") if owner and quota else "",
            limits=limits,
        )

    async def resolve(
        self,
        schemas: FunctionSchemas,
        value: Any,
        *,
        owner: str | None,
        owns: Callable[[str], bool],
        own_hosts: set[str],
        budget: Budget | None = None,
    ) -> tuple[Any, list[str]]:
        """A copy of ``value`` (an input) with every file field a reference, and the files'
        ids (``value`` itself is left as the caller sent it); what it stores is counted on
        ``budget`` (and listed in its ``made``)."""
        ids: list[str] = []
        if not schemas.takes_files:
            return value, ids
        value = copy.deepcopy(value)
        for field in refs.file_fields(schemas.input, schemas.defs, value):
            raw = refs.get(value, field.path)
            meta = await self.take(field, raw, owner, owns, own_hosts, budget=budget)
            value = refs.replace(value, field.path, refs.ref(meta.id))
            ids.append(meta.id)
        return value, ids

    async def take(
        self,
        field: FileField,
        raw: str,
        owner: str | None,
        owns: Callable[[str], bool],
        own_hosts: set[str],
        *,
        budget: Budget | None = None,
    ) -> FileMeta:
        """The file one field names (see the module's docstring), checked."""
        file_id = refs.ref_id(raw) or refs.url_id(raw, own_hosts)
        if file_id is not None:
            meta = await self.get(file_id)
            if meta is None or meta.expired():
                raise FileInputError(
                    field.name, f"no file {file_id}: never uploaded, expired or deleted"
                )
            if not owns(meta.owner):
                raise FileInputError(field.name, f"file {file_id} was made with another key")
            self.check(field, meta.content_type, meta.sniffed)
            return meta
        if raw.startswith("data:"):
            return await self._decode(field, raw, owner, budget)
        if urlsplit(raw).scheme in ("http", "https"):
            return await self._fetch(field, raw, owner, budget)
        raise FileInputError(
            field.name,
            "a file is an http(s) URL, a data URI (data:image/png;base64,...) or the url of"
            " a file uploaded with POST /files",
        )

    async def get(self, file_id: str) -> FileMeta | None:
        return await get_async(self.redis, file_id)

    @staticmethod
    def check(field: FileField, declared: str | None, sniffed: str | None) -> None:
        if field.accept and (why := refs.refusal(field.accept, declared, sniffed or None)):
            raise FileInputError(field.name, why)

    async def _decode(
        self, field: FileField, raw: str, owner: str | None, budget: Budget | None
    ) -> FileMeta:
        try:
            media, data = refs.parse_data_uri(raw)
        except refs.DataUriError as exc:
            raise FileInputError(field.name, str(exc)) from None
        self.check(field, media, refs.sniff(data[: refs.HEAD]))
        return await asyncio.to_thread(
            self.store.put_bytes,
            data,
            kind="upload",
            owner=owner,
            ttl=self.settings.upload_ttl,
            content_type=media,
            budget=budget,
        )

    async def _fetch(
        self, field: FileField, url: str, owner: str | None, budget: Budget | None
    ) -> FileMeta:
        timeout = aiohttp.ClientTimeout(total=self.settings.fetch_timeout)
        try:
            async with self.session.get(
                url, timeout=timeout, max_redirects=MAX_REDIRECTS
            ) as response:
                if response.status != 200:
                    raise FileInputError(field.name, f"fetching {url} answered {response.status}")
                if (response.content_length or 0) > self.settings.max_bytes:
                    raise FileInputError(
                        field.name,
                        f"{url} is {response.content_length} bytes, more than [files]"
                        f" max_bytes ({self.settings.max_bytes})",
                    )
                declared = response.headers.get("Content-Type", "")
                name = unquote(urlsplit(str(response.url)).path.rsplit("/", 1)[-1])
                meta = await self.upload(
                    response.content.iter_chunked(PIECE),
                    owner=owner,
                    filename=name,
                    content_type=refs.base_type(declared),
                    budget=budget,
                )
        except FileInputError:
            raise
        except FileTooLargeError as exc:
            raise FileInputError(field.name, f"fetching {url}: {exc}") from None
        except TimeoutError:
            raise FileInputError(
                field.name,
                f"fetching {url} took more than {self.settings.fetch_timeout:g} s ([files]"
                " fetch_timeout)",
            ) from None
        except (aiohttp.ClientError, RefusedAddressError, OSError, ValueError) as exc:
            raise FileInputError(field.name, f"fetching {url} failed: {_why(exc)}") from None
        try:
            self.check(field, meta.content_type, meta.sniffed)
        except FileInputError:
            await asyncio.to_thread(self.store.remove, meta.id)
            raise
        return meta

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self.guard), auto_decompress=False
            )
        return self._session


async def _fill(writer: FileWriter, pieces: AsyncIterator[bytes]) -> FileMeta:
    """Hand ``pieces`` to ``writer`` a MiB at a time (one thread hop each), then finish."""
    buffer = bytearray()
    try:
        async for piece in pieces:
            buffer += piece
            if len(buffer) >= PIECE:
                await asyncio.to_thread(writer.write, bytes(buffer))
                buffer.clear()
        await asyncio.to_thread(writer.write, bytes(buffer))
        return await asyncio.to_thread(writer.finish)
    except BaseException:
        await asyncio.to_thread(writer.abort)
        raise


def _why(exc: BaseException) -> str:
    """The refusal inside aiohttp's wrapping, if the guard refused; else what went wrong."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RefusedAddressError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__
