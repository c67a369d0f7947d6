"""Who is calling: the ``Authorization: Bearer <key>`` of a request, as a :class:`Caller`.

Every route except ``/healthz``, ``/readyz`` and the ``/docs`` page takes a ``caller``
(tests/unit/test_openapi.py checks that each documented route does); with ``[api] auth =
"none"`` (loopback only) the caller may do everything. A key is looked up by its SHA-256:
an unknown and a revoked key get the same answer.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException

from conveyor.api.params import takes
from conveyor.api.services import Platform
from conveyor.auth.caller import Caller
from conveyor.auth.db import usage
from conveyor.auth.keys import digest, same_digest
from conveyor.errors import AuthenticationError

ANYBODY = Caller()


async def authenticate(
    request: Request[Any, Any, Any], platform: NamedDependency[Platform]
) -> Caller:
    """The request's caller, or AuthenticationError (401). (It takes the ``platform``
    dependency the handlers take too, so Litestar resolves the two in a row rather than
    in a task group per request.)"""
    keys = platform.api_keys
    if keys is None:
        return ANYBODY
    header = request.headers.get("authorization")
    if header is None:
        raise AuthenticationError("this API needs a key: send Authorization: Bearer <key>")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise AuthenticationError("send the key as Authorization: Bearer <key>", invalid_token=True)
    presented = digest(key)
    record = await keys.find(presented)
    if record is None or not same_digest(record.digest, presented):
        raise AuthenticationError(
            "the API key is not valid (unknown or revoked)", invalid_token=True
        )
    await keys.touch(record)
    return Caller(record)


class KeysController(Controller):
    path = "/keys"
    opt = takes()

    @get("/me", summary="The caller's API key: its scopes, limits and usage")
    async def me(
        self, platform: NamedDependency[Platform], caller: NamedDependency[Caller]
    ) -> dict[str, Any]:
        key = caller.key
        if key is None:
            raise NotFoundException(
                'this API takes no keys ([api] auth = "none"): there is no key to describe'
            )
        return {
            "name": key.name,
            "scopes": list(key.scopes),
            "limits": key.limits.shown(),
            "usage": await usage(platform.invocations.redis, key.id),
        }
