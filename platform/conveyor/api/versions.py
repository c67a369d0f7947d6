"""A function's versions over HTTP: history, rollback and unpin; the bodies of remote deploy
(``PUT /functions/{name}``, served by the functions controller, which owns that path).

Reading the history needs the function's ``read`` (or ``invoke``) scope; everything that
changes what serves needs ``admin``.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath

from conveyor.api.openapi import VERSION_PATTERN
from conveyor.api.params import parse_json, takes
from conveyor.api.services import Platform
from conveyor.auth.caller import Caller
from conveyor.errors import BundleTooLargeError, ValidationError
from conveyor.queueing.function_store import StoredVersion
from conveyor.results import iso
from conveyor.store.bundle import size_text

ROLLBACK_BODY_BYTES = 4096
ZIP = "application/zip"
_VERSION = re.compile(VERSION_PATTERN)


def _bundle_allowance(limit: int) -> int:
    """Bytes a zip of ``limit`` bytes of files may take on the wire (headers, stored data)."""
    return limit + max(1024 * 1024, limit // 100)


async def _read_bundle(request: Request[Any, Any, Any], limit: int) -> bytes:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != ZIP:
        raise HTTPException(
            status_code=415,
            detail=f"send the function folder as {ZIP} (conveyor deploy PATH packs one), not"
            f" {media or 'nothing'}",
        )
    allowance = _bundle_allowance(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > allowance:
            raise BundleTooLargeError(
                f"the bundle is over {size_text(allowance)}; a version's files may add up to"
                f" {size_text(limit)} ([store] max_bundle_bytes). Keep large weights out of the"
                " folder: have setup() load them from a path or URL every worker reaches"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def deploy_body(
    platform: Platform, request: Request[Any, Any, Any], name: str
) -> tuple[dict[str, Any], int]:
    """Deploy the pushed folder: the answer, and 201 for a new function (else 200)."""
    existed = platform.functions.find(name) is not None
    data = await _read_bundle(request, platform.settings.store.max_bundle_bytes)
    outcome, stored = await platform.deployer.push(name, data)
    body = {
        "function": name,
        "version": stored.version,
        "outcome": outcome,
        "source": stored.source,
        "bundle_bytes": stored.size,
        "files": stored.files,
        "files_bytes": stored.files_bytes,
        "function_url": f"/functions/{name}",
        "versions_url": f"/functions/{name}/versions",
    }
    return body, 200 if existed else 201


def _rollback_version(body: Any) -> str:
    if (
        isinstance(body, dict)
        and set(body) == {"version"}
        and isinstance(body["version"], str)
        and _VERSION.match(body["version"])
    ):
        return body["version"]
    raise ValidationError(
        'send {"version": "<digest>"}: one of the versions GET /functions/<name>/versions lists',
        [{"field": "version", "message": "required: a version digest (12 hex digits)"}],
    )


def version_body(stored: StoredVersion, serving: str | None) -> dict[str, Any]:
    return {
        "version": stored.version,
        "status": "serving" if stored.version == serving else "retained",
        "source": stored.source,
        "created_at": iso(stored.created_at),
        "deployed_at": iso(stored.deployed_at),
        "bundle_bytes": stored.size,
        "files": stored.files,
        "files_bytes": stored.files_bytes,
        "active": stored.active,
    }


async def versions_body(platform: Platform, name: str) -> dict[str, Any]:
    platform.functions.entry(name)  # 404 for an unknown function
    state = await platform.deployer.store.state(name)
    history = await platform.deployer.store.history(name)
    serving = state.serving if state else None
    return {
        "function": name,
        "serving": serving,
        "pinned": state.pinned if state else None,
        "latest": state.latest if state else None,
        "versions": [version_body(stored, serving) for stored in history],
    }


class VersionsController(Controller):
    path = "/functions"
    opt = takes()

    @get("/{name:str}/versions", summary="A function's retained versions, newest first")
    async def versions(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_sees(name)
        return await versions_body(platform, name)

    @post("/{name:str}/rollback", summary="Serve a retained version (admin)", status_code=200)
    async def rollback(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_admin()
        content_type = request.headers.get("content-type", "")
        body = parse_json(
            await request.body(),
            content_type,
            ROLLBACK_BODY_BYTES,
            platform.settings.api.max_json_depth,
        )
        platform.functions.entry(name)
        await platform.deployer.rollback(name, _rollback_version(body))
        return await versions_body(platform, name)

    @post("/{name:str}/unpin", summary="Serve the latest deploy again (admin)", status_code=200)
    async def unpin(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_admin()
        platform.functions.entry(name)
        await platform.deployer.unpin(name)
        return await versions_body(platform, name)
