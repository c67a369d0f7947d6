"""Map jobs over HTTP: submit (streamed), watch, read results in order, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from conveyor.api.deadlines import request_deadline
from conveyor.api.files import admit_files, base_url, discard, own_hosts
from conveyor.api.params import idempotency_key, takes, wait_seconds
from conveyor.api.services import Platform
from conveyor.api.uploads import NDJSON, PAUSE_EVERY, BodyStream, ItemLimits, Line, items
from conveyor.auth.caller import Caller
from conveyor.auth.keys import Action
from conveyor.broker.app import kill
from conveyor.db import keyspace
from conveyor.db.subscription import long_poll
from conveyor.errors import (
    FileInputError,
    InputTooLargeError,
    InvocationFinishedError,
    InvocationNotFoundError,
    ValidationError,
)
from conveyor.files.db import hold
from conveyor.files.refs import REF
from conveyor.files.store import Budget
from conveyor.functions.registry import FunctionEntry
from conveyor.integers import whole_number
from conveyor.maps import db as maps
from conveyor.pipelines.plan import encoded
from conveyor.results import map_job_body, with_urls

BLOCK = 1000  # items stored per Redis round trip while uploading; results read per round trip
# ... or fewer: the items an upload holds before storing them, in bytes. With one item being
# read (at most [limits] max_input_bytes), this is all an upload holds in the API's memory.
BLOCK_BYTES = 4 * 1024 * 1024
CANCEL_GRACE = 1.0  # seconds running chunks get to notice a cancel before they are killed
CANCEL_LIMIT = 10.0
JOB = "/{name:str}/jobs/{job_id:str}"


class _FileItems:
    """The file fields of a map job's items, taken as an invoke takes them, and held by
    the job until it ends."""

    def __init__(
        self,
        platform: Platform,
        caller: Caller,
        request: Request[Any, Any, Any],
        entry: FunctionEntry,
        job_id: str,
        *,
        budget: Budget,
    ) -> None:
        assert entry.schemas is not None
        self.platform, self.caller, self.job_id = platform, caller, job_id
        self.budget = budget
        self.schemas = entry.schemas
        self.hosts = own_hosts(platform, request)

    async def take(self, value: Any) -> tuple[Any, list[dict[str, str]]]:
        try:
            value, ids = await self.platform.files.resolve(
                self.schemas,
                value,
                owner=self.caller.owner,
                owns=self.caller.owns,
                own_hosts=self.hosts,
                budget=self.budget,
            )
        except FileInputError as exc:
            return value, exc.errors
        if ids:
            await hold(self.platform.invocations.redis, ids, f"map:{self.job_id}")
        return value, []


def _media(request: Request[Any, Any, Any]) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in ("application/json", NDJSON):
        return media
    raise HTTPException(
        status_code=415, detail=f"send application/json or {NDJSON}, not {media or 'nothing'}"
    )


def _fields(entry: FunctionEntry, priority: int | None, owner: str | None) -> dict[str, str]:
    assert entry.spec is not None
    manifest = entry.spec.manifest
    fields = {
        "function": entry.name,
        "version": entry.spec.version,
        "queue": manifest.target_queue,
        "priority": str(manifest.queue.priority if priority is None else priority),
        "timeout": repr(manifest.limits.timeout),
        "ttl": str(manifest.results.ttl),
        "batch": str(manifest.batching.max_batch_size if manifest.batching else 0),
        "created_at": repr(time.time()),
        "chunks": "0",
        "outstanding": "0",
        "kind": "pipeline" if manifest.is_pipeline else "map",
    }
    if owner is not None:
        fields["owner"] = owner
    return fields


class JobsController(Controller):
    path = "/functions"
    opt = takes()

    @post(
        "/{name:str}/map",
        summary="Map a function over many inputs",
        status_code=202,
        request_max_body_size=None,
        opt=takes("priority"),
    )
    async def submit(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
    ) -> Response[dict[str, Any]]:
        caller.require(Action.INVOKE, name)
        entry = platform.functions.serving(name)
        assert entry.spec is not None and entry.schemas is not None
        platform.invocations.refuse_when_full()
        budget = await admit_files(platform, caller, entry.schemas.takes_files, name)
        deadline = request_deadline(request, None)  # Cancel-After, for every item
        media = _media(request)
        key = idempotency_key(request)
        job_id = str(uuid.uuid4())
        fields = _fields(entry, _priority(request), caller.owner)
        store = platform.maps
        await store.stage(job_id, fields)
        body = BodyStream(request.stream(), platform.settings.map.max_body_bytes)
        limits = ItemLimits(
            entry.spec.manifest.limits.max_input_bytes, platform.settings.api.max_json_depth
        )
        try:
            pairs = items(body, media, limits)
            files = _FileItems(platform, caller, request, entry, job_id, budget=budget)
            total = await self._upload(
                platform, entry, job_id, fields, pairs, limits=limits, files=files
            )
            idempotency = keyspace.map_idempotency(name, caller.owner or "", key) if key else ""
            await platform.invocations.take_key(
                name,
                caller.owner,
                caller.key.limits if caller.key is not None else None,
                total,
                idempotency,
            )
        except BaseException:
            await platform.maps.discard(job_id)
            await discard(platform, budget.made)  # a refused job keeps no byte
            raise
        if entry.spec.manifest.is_pipeline:  # each item a run, its steps frozen for all
            plan = platform.planner.plan(entry.spec, int(fields["priority"]))
            first = await store.start_runs(
                job_id,
                fields,
                total=total,
                plan=encoded(plan),
                idempotency=idempotency,
                digest=body.digest.hexdigest()[:32],
                pending_ttl=platform.settings.results.pending_ttl,
                metrics=platform.settings.metrics.enabled,
            )
            if deadline is not None and first == job_id:
                await platform.invocations.add_deadline(job_deadline(name, job_id), deadline)
            answer = map_job_body(await store.get(first, name))
            return Response(answer, status_code=202, headers={"Location": answer["status_url"]})
        census = await platform.invocations.census()
        workers = census.count(fields["queue"]) if census is not None else 0
        settings = platform.settings.map
        chunks = maps.window(workers, settings.window)
        first = await store.finish_upload(
            job_id,
            fields,
            total=total,
            chunks=chunks,
            target=settings.chunk_seconds,
            most=settings.max_chunk,
            idempotency=idempotency,
            digest=body.digest.hexdigest()[:32],
            pending_ttl=platform.settings.results.pending_ttl,
        )
        if deadline is not None and first == job_id:
            await platform.invocations.add_deadline(job_deadline(name, job_id), deadline)
        answer = map_job_body(await store.get(first, name))
        return Response(answer, status_code=202, headers={"Location": answer["status_url"]})

    async def _upload(
        self,
        platform: Platform,
        entry: FunctionEntry,
        job_id: str,
        fields: dict[str, str],
        pairs: AsyncIterator[tuple[str, Any]],
        *,
        limits: ItemLimits,
        files: _FileItems,
    ) -> int:
        """Store the items as they arrive; an invalid one fails by itself (a file field
        that cannot be taken too). The total."""
        assert entry.spec is not None and entry.schemas is not None
        limit = platform.settings.map.max_items
        valid: list[str] = []
        invalid: list[tuple[int, str]] = []
        index = held = 0
        async for field, got in pairs:
            value, text = (got.value, got.text) if isinstance(got, Line) else (got, None)
            if field != "input":
                await self._envelope(platform, job_id, fields, field, value)
                continue
            if index >= limit:
                raise InputTooLargeError(
                    f"more than {limit} items ([map] max_items); split the job"
                )
            errors = platform.validators.item_errors(entry.spec, entry.schemas, value)
            if not errors and entry.schemas.takes_files:
                value, errors = await files.take(value)
                text = None
            if errors:
                summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
                error = {"type": "ValidationError", "message": f"item {index}: {summary}"}
                invalid.append((index, json.dumps({"s": "failed", "a": 0, "e": error})))
            else:
                text = text or json.dumps(value, separators=(",", ":"))
                if len(text) > limits.max_bytes:
                    raise limits.too_large(index)
                large = len(text) > PAUSE_EVERY  # each step over it takes tens of ms:
                if large:  # other requests go between them
                    await asyncio.sleep(0)
                valid.append(maps.entry(index, 1, text))
                held += len(text)
                if large:
                    await asyncio.sleep(0)
            index += 1
            if len(valid) + len(invalid) >= BLOCK or held >= BLOCK_BYTES:
                await platform.maps.append(job_id, valid, invalid)
                valid, invalid, held = [], [], 0
        await platform.maps.append(job_id, valid, invalid)
        if index == 0:
            raise ValidationError(
                "invalid map request: no inputs", [{"field": "inputs", "message": "empty"}]
            )
        return index

    async def _envelope(
        self, platform: Platform, job_id: str, fields: dict[str, str], field: str, value: Any
    ) -> None:
        if field == "priority":
            number = isinstance(value, int | float) and not isinstance(value, bool)  # JSON false
            if not number or int(value) != value or not 0 <= value <= 9:
                raise ValidationError(
                    "invalid map request: priority must be an integer from 0 to 9",
                    [{"field": "priority", "message": "an integer from 0 to 9"}],
                )
            fields["priority"] = str(int(value))
        elif field == "webhook":
            platform.intake.require_enabled()
            if (
                not isinstance(value, dict)
                or set(value) != {"url"}
                or not isinstance(value["url"], str)
            ):
                raise ValidationError(
                    'invalid map request: webhook must be {"url": "https://..."}: the job\'s'
                    " completion is delivered there",
                    [{"field": "webhook", "message": "an object with a url, and nothing else"}],
                )
            fields["webhook"] = await platform.intake.accept({**value, "events": ["completed"]})
        await platform.maps.update(job_id, {field: fields[field]})

    @get("/{name:str}/jobs", summary="A function's recent map jobs", opt=takes("limit"))
    async def list_jobs(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        limit: Annotated[
            int, QueryParameter(ge=1, le=maps.RECENT_JOBS, description="how many, newest first")
        ] = 20,
    ) -> dict[str, Any]:
        caller.require_sees(name)
        platform.functions.entry(name)  # 404 for a name never deployed
        jobs = await platform.maps.recent(name, limit)
        now = time.time()
        return {
            "jobs": [
                map_job_body(j, now) for j in jobs if caller.may_handle(name, j.owner, Action.READ)
            ]
        }

    @get(JOB, summary="A map job: status, counts, progress", opt=takes("wait"))
    async def job(
        self,
        *,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
        job_id: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_sees(name)
        job = await platform.maps.get(job_id, name)
        _check(caller, job, Action.READ)
        seconds = wait_seconds(platform, request)
        if seconds and not job.final:
            with platform.map_events.watch(job_id) as changes:
                first = await platform.maps.get(job_id, name)

                async def read(_: str | None) -> maps.MapJob:
                    return await platform.maps.get(job_id, name)

                def changed(job: maps.MapJob) -> bool:  # answered at the next change
                    return job.final or job is not first

                job = await long_poll(first, changed, changes, seconds, read)
        return map_job_body(job)

    @get(
        JOB + "/results",
        summary="A map job's results, NDJSON, as they come",
        media_type=NDJSON,
        opt=takes("order", "from"),
    )
    async def results(
        self,
        *,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
        job_id: FromPath[str],
        order: Annotated[
            Literal["index", "completion"], QueryParameter(description="line order")
        ] = "index",
        from_: Annotated[
            int, QueryParameter(name="from", ge=0, description="skip this many lines (resume)")
        ] = 0,
    ) -> Stream:
        caller.require_sees(name)
        job = await platform.maps.get(job_id, name)
        _check(caller, job, Action.READ)
        lines = _in_order if order == "index" else _in_completion
        return Stream(lines(platform, job, from_, base_url(platform, request)), media_type=NDJSON)

    @post(JOB + "/cancel", summary="Cancel a map job", status_code=200)
    async def cancel(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        job_id: FromPath[str],
    ) -> dict[str, Any]:
        caller.require(Action.INVOKE, name)
        job = await platform.maps.get(job_id, name)
        _check(caller, job, Action.INVOKE)
        await end_job(platform, job)
        return map_job_body(await platform.maps.get(job_id, name))


def job_deadline(function: str, job_id: str) -> str:
    """A map job's member of the deadlines (an invocation's is its id)."""
    return f"map {function} {job_id}"


async def end_job(platform: Platform, job: maps.MapJob, as_: str = "cancelled") -> None:
    """Cancel (or, past its deadline, expire) a running job: nothing more starts, what
    runs is stopped."""
    if await platform.maps.cancel(job.id, as_):
        if job.kind == "pipeline":
            await _cancel_runs(platform, job.id)
        else:
            await _stop_running(platform, job.id)


async def _stop_running(platform: Platform, job_id: str) -> None:
    """Answer a cancel only once no chunk of the job runs: a chunk looks every few
    milliseconds and stops; one busy in a long item is killed, as a single invocation's
    attempt is."""
    deadline = time.monotonic() + CANCEL_GRACE
    while (running := await platform.maps.running(job_id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if not running:
        return
    for task_id in running:
        await kill(platform.invocations.celery, task_id)
    deadline = time.monotonic() + CANCEL_LIMIT
    while await platform.maps.running(job_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _cancel_runs(platform: Platform, job_id: str) -> None:
    """A job over a pipeline: each run under way is cancelled (its steps with it)."""
    for run_id in await platform.maps.running(job_id):
        with contextlib.suppress(InvocationFinishedError, InvocationNotFoundError):
            await platform.invocations.cancel(run_id)


def _check(caller: Caller, job: maps.MapJob, action: Action) -> None:
    if not caller.may_handle(job.function, job.owner, action):
        needed = f"read:{job.function}" if action is Action.READ else "admin"
        raise caller.denied(needed, f"job {job.id} was made with another key")


def _priority(request: Request[Any, Any, Any]) -> int | None:
    given = request.query_params.get("priority")
    if given is None:
        return None
    priority = whole_number(given)
    if priority is None or priority > 9:
        raise ClientException(f"priority must be an integer from 0 to 9, not {given!r}")
    return priority


def _text(line: dict[str, Any], base: str) -> str:
    """One results line; an output's files (``conveyor://files/<id>``) as URLs on ``base``
    (a line that names none is written once)."""
    text = json.dumps(line, separators=(",", ":"))
    if REF not in text or "output" not in line:
        return text
    line["output"] = with_urls(line["output"], None, base)
    return json.dumps(line, separators=(",", ":"))


async def _in_order(
    platform: Platform, job: maps.MapJob, start: int, base: str
) -> AsyncIterator[bytes]:
    """Lines in input order: a slow item holds back the lines after it (not their work)."""
    index = start
    while index < job.total:
        with platform.map_events.watch(job.id) as changed:
            block = await platform.maps.results(job.id, index, min(BLOCK, job.total - index))
            status = job.status if job.final else "running"
            out = []
            for compact in block:
                line = maps.result_line(index, compact, status)
                if line is None:
                    break
                out.append(_text(line, base))
                index += 1
            if out:
                yield ("\n".join(out) + "\n").encode()
                continue
            await _next_change(changed)
            job = await platform.maps.get(job.id, job.function)


async def _in_completion(
    platform: Platform, job: maps.MapJob, start: int, base: str
) -> AsyncIterator[bytes]:
    """Lines in the order the items finished (items a cancel kept from running: none)."""
    offset = start
    while True:
        with platform.map_events.watch(job.id) as changed:
            indices = await platform.maps.finished_order(job.id, offset, BLOCK)
            if indices:
                found = await platform.maps.pick(job.id, indices)
                lines = []
                for i, compact in zip(indices, found, strict=True):
                    line = maps.result_line(i, compact, "cancelled")
                    assert line is not None  # a finished item's line, or a cancelled one
                    lines.append(_text(line, base))
                offset += len(indices)
                yield ("\n".join(lines) + "\n").encode()
                continue
            if job.final:
                return
            await _next_change(changed)
            job = await platform.maps.get(job.id, job.function)


async def _next_change(changes: asyncio.Queue[str | None]) -> None:
    try:
        async with asyncio.timeout(1.0):  # and look again anyway: a missed event is no hang
            await changes.get()
    except TimeoutError:
        pass
