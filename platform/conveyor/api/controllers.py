"""HTTP controllers. They receive the registry and the queue client by injection and never
touch Celery or Redis themselves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.params import FromPath, QueryParameter
from pydantic import ValidationError

from conveyor.api.schemas import (
    InvokeRequest,
    accepted_body,
    function_body,
    result_body,
)
from conveyor.errors import InputTooLargeError, InputValidationError
from conveyor.functions.registry import Registry
from conveyor.queueing.client import QueueClient
from conveyor.queueing.jobs import JobRecord
from conveyor.runtime.validation import validate_input
from conveyor.settings import Settings

Wait = Annotated[
    float | None,
    QueryParameter(ge=0, le=60, description="seconds to wait for the result (≤ 60)"),
]


@dataclass
class Platform:
    """What the controllers are given: settings, the registry, the queueing seam."""

    settings: Settings
    registry: Registry
    queue: QueueClient
    loaded: bool = False


def _result_url(record: JobRecord) -> str:
    return f"/functions/{record.function}/results/{record.id}"


def _parse_invoke(body: bytes, content_type: str, limit: int) -> InvokeRequest:
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media and not (media == "application/json" or media.endswith("+json")):
        raise HTTPException(
            status_code=415, detail=f"send the body as application/json, not {media}"
        )
    if len(body) > limit:
        raise InputTooLargeError(f"the body is {len(body)} bytes; this function accepts {limit}")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClientException(f"the body is not valid JSON: {exc}") from None
    try:
        return InvokeRequest.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InputValidationError(
            f'invalid request body: {summary}; expected {{"input": ...}}', errors
        ) from None


def _idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ClientException("Idempotency-Key must be 1 to 255 printable characters")
    return key


class FunctionsController(Controller):
    path = "/functions"

    @get("/", summary="List functions")
    async def list_functions(self, platform: NamedDependency[Platform]) -> dict[str, Any]:
        census = await platform.queue.census()
        return {
            "functions": [
                function_body(e, detail=False, census=census) for e in platform.registry.entries()
            ]
        }

    @get("/{name:str}", summary="Describe a function, with its input schema")
    async def describe(
        self, platform: NamedDependency[Platform], name: FromPath[str]
    ) -> dict[str, Any]:
        entry = platform.registry.entry(name)
        return function_body(entry, detail=True, census=await platform.queue.census())

    @post("/{name:str}/invoke", summary="Invoke a function", status_code=202)
    async def invoke(
        self,
        platform: NamedDependency[Platform],
        request: Request[Any, Any, Any],
        name: FromPath[str],
        wait: Wait = None,
    ) -> Response[dict[str, Any]]:
        entry = platform.registry.serving(name)
        assert entry.spec is not None and entry.loaded is not None
        body = _parse_invoke(
            await request.body(),
            request.headers.get("content-type", ""),
            entry.spec.manifest.limits.max_input_bytes,
        )
        validate_input(entry.loaded, body.input)
        record = await platform.queue.submit(
            entry.spec, body.input, body.priority, wait or 0, _idempotency_key(request)
        )
        if record.status.final:
            return Response(result_body(record), status_code=200)
        url = _result_url(record)
        return Response(
            accepted_body(record, url, await platform.queue.census()),
            status_code=202,
            headers={"Location": url},
        )

    @get("/{name:str}/results/{invocation_id:str}", summary="An invocation's result")
    async def result(
        self,
        platform: NamedDependency[Platform],
        name: FromPath[str],
        invocation_id: FromPath[str],
        wait: Wait = None,
    ) -> dict[str, Any]:
        if wait:
            record = await platform.queue.wait(invocation_id, wait, function=name)
        else:
            record = await platform.queue.get(invocation_id, function=name)
        if record.status.final:
            return result_body(record)
        return result_body(record, await platform.queue.census())

    @delete(
        "/{name:str}/results/{invocation_id:str}", summary="Cancel an invocation", status_code=200
    )
    async def cancel(
        self, platform: NamedDependency[Platform], name: FromPath[str], invocation_id: FromPath[str]
    ) -> dict[str, Any]:
        return result_body(await platform.queue.cancel(invocation_id, function=name))


class HealthController(Controller):
    path = "/"

    @get("/healthz", summary="Liveness")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: Redis reachable and functions loaded")
    async def readyz(self, platform: NamedDependency[Platform]) -> Response[dict[str, Any]]:
        redis_ok = await platform.queue.ping()
        ready = redis_ok and platform.loaded
        body = {
            "status": "ready" if ready else "unavailable",
            "redis": redis_ok,
            "functions_loaded": platform.loaded,
        }
        return Response(body, status_code=200 if ready else 503)
