"""Reading a request: its JSON body, ``?wait=``, ``?version=``, ``Idempotency-Key``, and
no query parameter a route does not take; each bad one a 4xx that says what to send."""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Request
from litestar.exceptions import ClientException, HTTPException

from conveyor.api.operations import IDEMPOTENCY_KEY_PATTERN, VERSION_PATTERN
from conveyor.api.services import Platform
from conveyor.errors import InputTooLargeError
from conveyor.integers import whole_number
from conveyor.nesting import check_portable, check_text

QUERY = "query"  # a route handler's ``opt``: the query parameters it takes (see takes())
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")  # as JSON writes one
_VERSION = re.compile(VERSION_PATTERN)


async def limited_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (Content-Length, or as it streams)."""
    length = whole_number(request.headers.get("content-length"))
    if length is not None:
        if length > limit:
            raise HTTPException(status_code=413, detail=_too_large(limit))
        return await request.body()  # the server holds it to its Content-Length
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(status_code=413, detail=_too_large(limit))
    return bytes(body)


def _too_large(limit: int) -> str:
    return f"the body is over {limit} bytes ([api] max_body_bytes); send files as files"


def parse_json(body: bytes, content_type: str, limit: int, depth: int) -> Any:
    """A JSON body of at most ``limit`` bytes and ``depth`` levels of nesting."""
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media != "application/json":
        raise HTTPException(
            status_code=415, detail=f"send the body as application/json, not {media or 'nothing'}"
        )
    if len(body) > limit:
        raise InputTooLargeError(f"the body is {len(body)} bytes; this function accepts {limit}")
    check_text(body, depth)
    try:
        value = json.loads(body, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClientException(f"the body is not valid JSON: {exc}") from None
    check_portable(value, "", body)
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise ClientException(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (inner spaces allowed)"
        )
    return key


def wait_seconds(platform: Platform, request: Request[Any, Any, Any]) -> float:
    """``?wait=S``: a JSON number of seconds, at most ``[api] max_wait``, given once."""
    given = request.query_params.getall("wait", [])
    if not given:
        return 0.0
    limit = platform.settings.api.max_wait
    if len(given) > 1 or not _NUMBER.match(given[0]) or not 0 <= float(given[0]) <= limit:
        raise ClientException(
            f"wait must be a number of seconds from 0 to {limit:g}, given once; got {given}"
        )
    return float(given[0])


def version_param(request: Request[Any, Any, Any]) -> str | None:
    """``?version=<digest>``: a retained version to run instead of the serving one."""
    given = request.query_params.getall("version", [])
    if not given:
        return None
    if len(given) > 1 or not _VERSION.match(given[0]):
        raise ClientException(
            f"version must be one version digest (12 hex digits, GET /functions/<name>/versions"
            f" lists them); got {given}"
        )
    return str(given[0])


def takes(*names: str) -> dict[str, Any]:
    """A route handler's ``opt``: the query parameters it takes (controllers say none)."""
    return {QUERY: frozenset(names)}


async def reject_unknown_query(request: Request[Any, Any, Any]) -> None:
    """Litestar's ``before_request``: a query parameter the route does not take is a 400
    naming it (a misspelt ``?wiat=`` must not be ignored), as ``/schema`` says. (Async so
    that Litestar calls it on the event loop: a sync hook would go through a thread.)"""
    allowed = request.route_handler.opt.get(QUERY)
    if allowed is None:
        return  # a page or an asset, outside the document
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ClientException(
            f"unknown query parameter {', '.join(map(repr, unknown))}; this route takes"
            f" {', '.join(sorted(allowed)) or 'none'}"
        )
