"""Trainings: ``POST /functions/{name}/trainings`` starts one; read, wait, cancel, logs.

A training runs the function's ``[training]`` handler (:mod:`conveyor.trainings`) and,
when it succeeds, stores a new version of the function: serving at once with ``promote``,
otherwise retained for ``?version=`` and rollback. Its record is an invocation's, so its
result, waiting, cancelling, logs, progress and webhooks are an invocation's too; these
routes show only trainings, and a ``train:<glob>`` key reads and cancels its own.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from conveyor.api.controllers import waited
from conveyor.api.files import admit_files, discard, own_hosts
from conveyor.api.params import idempotency_key, limited_body, parse_json, takes, wait_seconds
from conveyor.api.services import Platform
from conveyor.auth.caller import Caller
from conveyor.auth.keys import Action, KeyLimits
from conveyor.errors import (
    BrokerUnavailableError,
    ConveyorError,
    InvocationNotFoundError,
    NotTrainableError,
    TrainingError,
)
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.registry import FunctionSpec
from conveyor.invocations.records import InvocationRecord, InvocationStatus
from conveyor.log import get_logger
from conveyor.results import accepted_body, logs_body, result_body, result_url
from conveyor.store.db import TRAINING as TRAINED_SOURCE

log = get_logger(__name__)

TRAININGS = "/{name:str}/trainings"
TRAINING = TRAININGS + "/{training_id:str}"
LISTED = 50  # the newest trainings a listing shows
LOOK_EVERY = 0.2  # seconds between looks for trainings whose handler returned
LEASE_MARGIN = 60.0  # seconds past the inspection's limit before another process retries


def trainable(platform: Platform, name: str) -> tuple[FunctionSpec, FunctionSchemas]:
    """The serving version of ``name``, which must have a ``[training]`` table."""
    entry = platform.functions.serving(name)
    assert entry.spec is not None and entry.schemas is not None
    if entry.spec.manifest.training is None or entry.schemas.training is None:
        raise NotTrainableError(
            f"{name!r} has no [training] table in its function.toml: add one (handler ="
            ' "train:train") to train it'
        )
    return entry.spec, entry.schemas


async def start_training(
    platform: Platform,
    spec: FunctionSpec,
    schemas: FunctionSchemas,
    value: Any,
    *,
    promote: bool,
    owner: str | None,
    wait: float = 0,
    key: str | None = None,
    webhook: str | None = None,
    files: list[str] | None = None,
    key_limits: KeyLimits | None = None,
) -> InvocationRecord:
    """Submit a training of ``spec`` (its input validated already) and list it; it counts
    against the limits of the API key that starts it (``key_limits``)."""
    record = await platform.invocations.submit(
        spec,
        value,
        wait=wait,
        idempotency_key=key,
        owner=owner,
        webhook=webhook,
        files=files or [],
        training={"promote": promote},
        key_limits=key_limits,
    )
    await platform.trainings.add(spec.name, record.id, record.created_at)
    return record


async def trainings_body(
    platform: Platform, caller: Caller, name: str, limit: int = LISTED
) -> list[dict[str, Any]]:
    """``name``'s newest trainings that the caller may read, as their results."""
    shown = []
    for training_id in await platform.trainings.newest(name, limit):
        try:
            record = await platform.invocations.get(training_id, function=name)
        except InvocationNotFoundError:
            continue  # it expired since it was listed
        if caller.may_handle(name, record.owner, Action.READ, own_with=Action.TRAIN):
            shown.append(result_body(record))
    return shown


class TrainingsController(Controller):
    path = "/functions"
    opt = takes()

    @post(TRAININGS, summary="Start a training", status_code=202, opt=takes("wait"))
    async def start(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
    ) -> Response[dict[str, Any]]:
        caller.require(Action.TRAIN, name)
        spec, schemas = trainable(platform, name)
        seconds = wait_seconds(platform, request)
        key = idempotency_key(request)
        text = await limited_body(request, platform.settings.api.max_body_bytes)
        depth = platform.settings.api.max_json_depth
        limit = spec.manifest.limits.max_input_bytes
        body = parse_json(text, request.headers.get("content-type", ""), limit, depth)
        if isinstance(body, dict) and "webhook" in body:
            platform.intake.require_enabled()
        platform.validators.validate_training(spec, schemas, body)
        if body.get("promote") and not caller.can(Action.DEPLOY, name):
            # Serving a version at once (and ending a rollback pin) is a deploy's right.
            raise caller.denied(f"deploy:{name}", "promote serves the new version at once")
        webhook = await platform.intake.accept(body["webhook"]) if "webhook" in body else None
        budget = await admit_files(platform, caller, schemas.for_training().takes_files, name)
        try:
            value, files = await platform.files.resolve(
                schemas.for_training(),
                body["input"],
                owner=caller.owner,
                owns=caller.owns,
                own_hosts=own_hosts(platform, request),
                budget=budget,
            )
            record = await start_training(
                platform,
                spec,
                schemas,
                value,
                promote=bool(body.get("promote", False)),
                owner=caller.owner,
                wait=seconds,
                key=key,
                webhook=webhook,
                files=files,
                key_limits=caller.key.limits if caller.key is not None else None,
            )
        except BaseException:
            await discard(platform, budget.made)  # a refused request keeps no byte
            raise
        if record.status.final:
            return Response(result_body(record), status_code=200)
        accepted = accepted_body(record, await platform.invocations.census(), None)
        return Response(accepted, status_code=202, headers={"Location": result_url(record)})

    @get(TRAININGS, summary="A function's trainings, newest first")
    async def list_trainings(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_sees(name)
        platform.functions.entry(name)  # 404 for an unknown function
        return {"function": name, "trainings": await trainings_body(platform, caller, name)}

    @get(
        TRAINING,
        summary="A training: its status and, once it ends, its new version",
        opt=takes("wait"),
    )
    async def training(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        request: Request[Any, Any, Any],
        name: FromPath[str],
        training_id: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_sees(name)
        record = await waited(platform, request, name, training_id)
        check(caller, record, Action.READ)
        census = None if record.status.final else await platform.invocations.census()
        return result_body(record, census)

    @get(TRAINING + "/logs", summary="What a training printed or logged")
    async def training_logs(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        training_id: FromPath[str],
    ) -> dict[str, Any]:
        caller.require_sees(name)
        record = await platform.invocations.get(training_id, function=name)
        check(caller, record, Action.READ)
        return logs_body(record, record.logs)

    @post(TRAINING + "/cancel", summary="Cancel a training", status_code=200)
    async def cancel_training(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        name: FromPath[str],
        training_id: FromPath[str],
    ) -> dict[str, Any]:
        caller.require(Action.TRAIN, name)
        record = await platform.invocations.get(training_id, function=name)
        check(caller, record, Action.TRAIN)
        return result_body(await platform.invocations.cancel(training_id, function=name))


def check(caller: Caller, record: InvocationRecord, action: Action) -> None:
    """A training of the function the caller may read (any, with ``read``) or cancel (its
    own, with ``train``); an invocation's id is not one."""
    if record.training is None:
        raise NotTrainableError(
            f"{record.id} is an invocation of {record.function!r}, not a training; read it at"
            f" /functions/{record.function}/results/{record.id}"
        )
    wanted = Action.READ if action is Action.READ else Action.INVOKE
    if not caller.may_handle(record.function, record.owner, wanted, own_with=Action.TRAIN):
        needed = f"read:{record.function}" if action is Action.READ else "admin"
        raise caller.denied(needed, f"training {record.id} was started with another key")


# -- making the version ------------------------------------------------------------------


async def finish(platform: Platform, training_id: str) -> None:
    """Deploy the version a training's worker handed over (its folder, as a bundle in the
    file store) as a push is deployed, inspected the same way, and end the training: its
    result holds the new version and the handler's metrics, or why the version would not
    deploy (what serves is then untouched)."""
    handed = await platform.trainings.handed(training_id)
    try:
        record = await platform.invocations.get(training_id)
    except InvocationNotFoundError:
        record = None
    if handed is None or record is None or record.status is not InvocationStatus.RUNNING:
        await platform.trainings.done(training_id)  # cancelled, deleted, or ended already
        if handed is not None:
            await _discard(platform, handed[0])
        return
    file, metrics = handed
    promote = bool((record.training or {}).get("promote"))
    try:
        data = await asyncio.to_thread(_read, platform, file)
        outcome, stored = await platform.deployer.push(
            record.function, data, source=TRAINED_SOURCE, serve=promote, training=training_id
        )
    except BrokerUnavailableError:
        raise  # Redis away: the claim's lease runs out and it is tried again
    except Exception as exc:  # a version that would not deploy fails it
        error = {"type": "TrainingError", "message": f"the new version would not deploy: {exc}"}
        await platform.invocations.end(
            training_id, InvocationStatus.FAILED, error=json.dumps(error)
        )
        log.warning("training_failed", invocation_id=training_id, error=str(exc))
    else:
        output = (
            f'{{"new_version": {json.dumps(stored.version)},'
            f' "promoted": {json.dumps(outcome != "retained")}, "metrics": {metrics}}}'
        )
        await platform.invocations.end(training_id, InvocationStatus.SUCCEEDED, output=output)
        log.info(
            "training_version_stored",
            function=record.function,
            invocation_id=training_id,
            new_version=stored.version,
            outcome=outcome,
        )
    await platform.trainings.done(training_id)
    await _discard(platform, file)


def _read(platform: Platform, file: str) -> bytes:
    store = platform.files.store
    meta = store.get(file)
    if meta is None:
        raise TrainingError("the new version's files are gone from the file store")
    return b"".join(store.read(meta))


async def _discard(platform: Platform, file: str) -> None:
    await asyncio.to_thread(platform.files.store.remove, file)


async def finish_forever(platform: Platform) -> None:
    """The loop of one API process (any number may run): trainings whose handler returned
    are made into versions, each by one process at a time."""
    lease = platform.settings.functions.inspect_timeout + LEASE_MARGIN
    while True:
        await asyncio.sleep(LOOK_EVERY)
        try:
            while (training_id := await platform.trainings.claim(lease)) is not None:
                await finish(platform, training_id)
        except ConveyorError as exc:  # Redis away: the next look tries again
            log.warning("trainings_not_finished", error=str(exc))
