"""A function's versions over HTTP: history, rollback and unpin; how a remote deploy went
(``PUT /functions/{name}`` itself is served by the functions controller, which owns that
path: :mod:`conveyor.api.deploys`).

Reading the history needs the function's ``read`` (or ``invoke``) scope; everything that
changes what serves needs ``admin``.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from conveyor.api.operations import VERSION_PATTERN
from conveyor.api.params import parse_json, takes
from conveyor.api.services import Platform
from conveyor.auth.caller import Caller
from conveyor.errors import ValidationError
from conveyor.results import iso
from conveyor.store.db import StoredVersion

ROLLBACK_BODY_BYTES = 4096
_VERSION = re.compile(VERSION_PATTERN)


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
        **({"training": stored.training} if stored.training else {}),
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

    @get(
        "/{name:str}/deployments/{deployment_id:str}",
        summary="How a deployment (PUT /functions/{name}) went",
    )
    async def deployment(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        deployment_id: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_admin()
        return await platform.deploys.status(name, deployment_id)

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
