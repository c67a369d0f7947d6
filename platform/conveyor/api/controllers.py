"""HTTP controllers. They receive what serves (the function store's view) and the queue
client by injection and never touch Celery or Redis themselves, nor any function's code: a
request is validated against the JSON Schema the inspector found for the version it runs."""

from __future__ import annotations

from typing import Any

from litestar import Controller, HttpMethod, Request, Response, delete, get, post, put, route
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import FromPath

from conveyor.api.deadlines import request_deadline
from conveyor.api.deploys import deploy
from conveyor.api.files import admit_files, base_url, discard, inline_files, own_hosts
from conveyor.api.multipart import check_parts, is_multipart, read_form
from conveyor.api.params import (
    idempotency_key,
    limited_body,
    parse_json,
    takes,
    version_param,
    wait_seconds,
)
from conveyor.api.schemas import function_body
from conveyor.api.services import Platform
from conveyor.auth.caller import Caller
from conveyor.auth.keys import Action
from conveyor.errors import ValidationError
from conveyor.files.store import Budget
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.registry import FunctionEntry, FunctionSpec
from conveyor.invocations.client import key_counters
from conveyor.invocations.records import InvocationRecord
from conveyor.pipelines.plan import count_against, input_fanouts
from conveyor.results import Steps, accepted_body, logs_body, result_body, result_url

RESULT = "/{name:str}/results/{invocation_id:str}"
FUNCTION = "/{name:str}"


class FunctionsController(Controller):
    path = "/functions"
    opt = takes()

    @get("/", summary="List functions")
    async def list_functions(
        self, platform: NamedDependency[Platform], caller: NamedDependency[Caller]
    ) -> dict[str, Any]:
        census = await platform.invocations.census()
        entries = [e for e in platform.functions.entries() if caller.sees(e.name)]
        return {"functions": [function_body(e, detail=False, census=census) for e in entries]}

    @route(FUNCTION, http_method=[HttpMethod.OPTIONS], status_code=204, include_in_schema=False)
    async def allow_function_methods(self) -> Response[None]:  # see allow_result_methods
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS, PUT"})

    @get(FUNCTION, summary="Describe a function, with its input and output schemas")
    async def describe(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_sees(name)
        entry = platform.functions.entry(name)
        body = function_body(entry, detail=True, census=await platform.invocations.census())
        return body | await waiting_body(platform, entry)

    @put(FUNCTION, summary="Deploy a function folder (admin)", request_max_body_size=None)
    async def deploy(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
    ) -> Response[dict[str, Any]]:
        caller.require_admin()
        existed = platform.functions.find(name) is not None
        limit = platform.settings.bundle_limit
        return await deploy(platform.deploys, request, name, existed=existed, limit=limit)

    @delete(FUNCTION, summary="Remove a function (admin)", status_code=204)
    async def remove(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
    ) -> None:
        caller.require_admin()
        await platform.deployer.remove(name)

    @post("/{name:str}/purge", summary="Cancel every waiting invocation (admin)", status_code=200)
    async def purge(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_admin()
        platform.functions.entry(name)  # 404 for an unknown function
        return {"function": name, "purged": await platform.invocations.purge(name)}

    @post(
        "/{name:str}/invoke",
        summary="Invoke a function",
        status_code=202,
        opt=takes("wait", "version"),
        request_max_body_size=None,  # JSON: [api] max_body_bytes (limited_body); files: streamed
    )
    async def invoke(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
    ) -> Response[dict[str, Any]]:
        caller.require(Action.INVOKE, name)
        version = version_param(request)
        if version is None:
            entry = platform.functions.serving(name)
            assert entry.spec is not None and entry.schemas is not None
            spec, schemas = entry.spec, entry.schemas
        else:
            spec, schemas = await platform.functions.version(name, version)
        seconds = wait_seconds(platform, request)
        key = idempotency_key(request)
        content_type = request.headers.get("content-type", "")
        limit, depth = spec.manifest.limits.max_input_bytes, platform.settings.api.max_json_depth
        budget = await admit_files(platform, caller, schemas.takes_files, name)
        form = None
        if is_multipart(content_type):
            form = await read_form(
                request.stream(),
                content_type,
                platform.files,
                owner=caller.owner,
                limit=limit,
                depth=depth,
                budget=budget,
            )
            body: Any = form.body
        else:
            text = await limited_body(request, platform.settings.api.max_body_bytes)
            body = parse_json(text, content_type, limit, depth)
        try:
            if form is not None:
                check_parts(form, schemas)
            record = await _submit(
                platform, caller, request, spec, schemas, body, seconds, key, budget
            )
        except BaseException:
            await discard(platform, budget.made)  # a refused request keeps no byte
            raise
        steps = await run_steps(platform, record)
        if record.status.final:
            body = result_body(record, base=_base(platform, request, record), steps=steps)
            return Response(body, status_code=200)
        return Response(
            accepted_body(record, await platform.invocations.census(), steps),
            status_code=202,
            headers={"Location": result_url(record)},
        )

    # Litestar 2 answers OPTIONS on a path served by several handlers with the methods of
    # only one of them (litestar#4169, fixed in 3.0). A controller registers its handlers
    # in the order of their names, so this one comes first on the path and takes the place
    # of the handler Litestar would make (tests/integration/test_invoke.py checks Allow).
    @route(RESULT, http_method=[HttpMethod.OPTIONS], status_code=204, include_in_schema=False)
    async def allow_result_methods(self) -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS"})

    @get(RESULT, summary="An invocation's result", opt=takes("wait", "files"))
    async def result(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
        invocation_id: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_sees(name)
        record = await waited(platform, request, name, invocation_id)
        check_handles(caller, record, Action.READ)
        inline = (
            await inline_files(platform, caller, record.files or []) if _inline(request) else None
        )
        steps = await run_steps(platform, record)
        if record.status.final:
            base = _base(platform, request, record)
            return result_body(record, base=base, inline=inline, steps=steps)
        return result_body(record, await platform.invocations.census(), steps=steps)

    @get(RESULT + "/logs", summary="What an invocation printed or logged")
    async def logs(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        invocation_id: FromPath[str],
    ) -> dict[str, Any]:
        record = await readable(platform, caller, name, invocation_id)
        logs = await platform.runs.logs(record.id) if record.pipeline else record.logs
        return logs_body(record, logs)

    @post(RESULT + "/cancel", summary="Cancel an invocation", status_code=200)
    async def cancel(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        invocation_id: FromPath[str],
    ) -> dict[str, Any]:
        caller.require(Action.INVOKE, name)
        record = await platform.invocations.get(invocation_id, name)
        check_handles(caller, record, Action.INVOKE)
        found = platform.functions.find(name)
        spec = found.spec if found is not None else None
        grace = spec.manifest.limits.cancel_grace if spec and record.streaming else 0.0
        cancelled = await platform.invocations.cancel(invocation_id, function=name, grace=grace)
        return result_body(cancelled, steps=await run_steps(platform, cancelled))

    @delete(RESULT, summary="Delete a finished invocation", status_code=204)
    async def delete_result(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        invocation_id: FromPath[str],
    ) -> None:
        caller.require(Action.INVOKE, name)
        check_handles(caller, await platform.invocations.get(invocation_id, name), Action.INVOKE)
        await platform.invocations.delete(invocation_id, function=name)


async def _submit(  # noqa: PLR0917
    platform: Platform,
    caller: Caller,
    request: Request[Any, Any, Any],
    spec: FunctionSpec,
    schemas: FunctionSchemas,
    body: Any,
    seconds: float,
    key: str | None,
    budget: Budget,
) -> InvocationRecord:
    """Validate ``body``, take its files (URLs fetched, data URIs stored, uploads checked,
    each byte counted on ``budget`` before it is written) and submit it."""
    if isinstance(body, dict) and "webhook" in body:
        platform.intake.require_enabled()  # a clearer answer than "not allowed here"
    platform.validators.validate(spec, schemas, body)
    webhook = await platform.intake.accept(body["webhook"]) if "webhook" in body else None
    value, files = await platform.files.resolve(
        schemas,
        body["input"],
        owner=caller.owner,
        owns=caller.owns,
        own_hosts=own_hosts(platform, request),
        budget=budget,
    )
    priority = None if body.get("priority") is None else int(body["priority"])
    deadline = request_deadline(request, body)
    plan, work = None, 1
    if spec.manifest.is_pipeline:
        census = await platform.invocations.census()
        workers = census.pool if census is not None else None
        plan = platform.planner.plan(spec, priority, workers=workers)
        work += _fanned_out(platform, value, plan)
        counters = key_counters(caller.owner, caller.key.limits if caller.key else None)
        if counters is not None:
            plan = count_against(plan, counters)
    return await platform.invocations.submit(
        spec,
        value,
        priority=priority,
        wait=seconds,
        idempotency_key=key,
        owner=caller.owner,
        webhook=webhook,
        files=files,
        sent=body["input"] if files else None,
        stream=schemas.streams,
        plan=plan,
        deadline=deadline,
        key_limits=caller.key.limits if caller.key is not None else None,
        work=work,
    )


def _fanned_out(platform: Platform, value: Any, plan: dict[str, Any]) -> int:
    """The elements a run's for_each steps over its input start: refused past
    ``[pipelines] max_fanout`` before anything is stored, else counted as the run's work."""
    limit = platform.settings.pipelines.max_fanout
    fanouts = input_fanouts(plan, value)
    for text, count in fanouts:
        if count > limit:
            field = "input" + text.removeprefix("$.input")
            message = f"{count} elements for {text}, more than [pipelines] max_fanout ({limit})"
            raise ValidationError(
                f"{field}: {message}", [{"field": field, "message": message, "type": "fanout"}]
            )
    return sum(count for _, count in fanouts)


async def waiting_body(platform: Platform, entry: FunctionEntry) -> dict[str, Any]:
    """How many of its invocations wait to start, and its cap ([limits] max_queued); with
    [limits] concurrency, how many run and the limit."""
    body: dict[str, Any] = {"waiting": await platform.invocations.waiting(entry.name)}
    limits = entry.spec.manifest.limits if entry.spec is not None else None
    if limits is not None and limits.max_queued is not None:
        body["max_queued"] = limits.max_queued
    if limits is not None and limits.concurrency is not None:
        body["running"] = await platform.invocations.running(entry.name)
        body["concurrency"] = limits.concurrency
    return body


async def run_steps(platform: Platform, record: InvocationRecord) -> Steps:
    """A pipeline run's steps (None for any other invocation)."""
    return await platform.runs.steps(record.id) if record.pipeline else None


def _base(platform: Platform, request: Request[Any, Any, Any], record: InvocationRecord) -> str:
    """The base of its files' URLs: worked out only for a record that has files (a run's
    output may hold its steps')."""
    return base_url(platform, request) if record.files or record.pipeline else ""


def _inline(request: Request[Any, Any, Any]) -> bool:
    """``?files=url`` (the default) or ``?files=data_uri``."""
    given = request.query_params.getall("files", [])
    if given not in ([], ["url"], ["data_uri"]):
        raise ClientException(f"files is url or data_uri, given once; got {given}")
    return given == ["data_uri"]


async def waited(
    platform: Platform, request: Request[Any, Any, Any], name: str, invocation_id: str
) -> InvocationRecord:
    """An invocation of ``name``, once final or after ``?wait`` seconds (now without)."""
    seconds = wait_seconds(platform, request)
    if seconds:
        return await platform.invocations.wait(invocation_id, seconds, function=name)
    return await platform.invocations.get(invocation_id, function=name)


async def readable(
    platform: Platform, caller: Caller, name: str, invocation_id: str
) -> InvocationRecord:
    """An invocation of ``name`` the caller may read (404 or 403 otherwise)."""
    caller.require_sees(name)
    record = await platform.invocations.get(invocation_id, function=name)
    check_handles(caller, record, Action.READ)
    return record


def check_handles(caller: Caller, record: InvocationRecord, action: Action) -> None:
    """One invocation of a function the caller has a scope on, but maybe not theirs: other
    keys' invocations are read with ``read:<function>``, cancelled and deleted by admins."""
    if not caller.may_handle(record.function, record.owner, action):
        needed = f"read:{record.function}" if action is Action.READ else "admin"
        raise caller.denied(needed, f"invocation {record.id} was made with another key")


class HealthController(Controller):
    path = "/"
    opt = takes()

    @get("/healthz", summary="Liveness")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: Redis reachable and functions loaded")
    async def readyz(self, platform: NamedDependency[Platform]) -> Response[dict[str, Any]]:
        redis_ok = await platform.invocations.ping()
        # in sync: the function store read since the subscription last (re)connected
        synced = platform.deployer.in_sync and platform.invocations.subscription.connected
        loaded = platform.loaded and synced
        ready = redis_ok and loaded
        body = {
            "status": "ready" if ready else "unavailable",
            "redis": redis_ok,
            "functions_loaded": loaded,
        }
        return Response(body, status_code=200 if ready else 503)
