"""The Litestar app factory: ``create_app(settings)``.

On start-up it scans the functions folder and starts inspecting it (in subprocesses: no
user code runs here), the hot-reload watcher, the invocation client's event listener (which also
follows the function store: what serves is the store's, whichever API process deployed it)
and the collection of old versions; controllers get a :class:`Platform` by dependency
injection. ``/readyz`` answers 200 once the functions found at start are inspected and
deployed, and this process has read what serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from litestar import Litestar, get
from litestar.config.cors import CORSConfig
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware

from conveyor.api.auth import KeysController, authenticate
from conveyor.api.browser import BrowserGuard
from conveyor.api.controllers import FunctionsController, HealthController
from conveyor.api.deploys import STALE_MARGIN, Deploys
from conveyor.api.docs import assets, docs_page
from conveyor.api.files import FilesController
from conveyor.api.jobs import JobsController
from conveyor.api.limits import limits_forever
from conveyor.api.observability import ObservabilityController
from conveyor.api.observability import assets as dashboard_assets
from conveyor.api.openapi import Options, document
from conveyor.api.params import reject_unknown_query
from conveyor.api.problems import EXCEPTION_HANDLERS
from conveyor.api.readers import OpenResponses
from conveyor.api.schedules import SchedulesController, fire_forever
from conveyor.api.services import Platform
from conveyor.api.streams import StreamsController
from conveyor.api.trainings import TrainingsController, finish_forever
from conveyor.api.validation import RequestValidators
from conveyor.api.versions import VersionsController
from conveyor.auth.caller import Caller
from conveyor.auth.db import ApiKeyStore
from conveyor.db import keyspace
from conveyor.db.connections import sync_client
from conveyor.db.subscription import Subscription, Waiters
from conveyor.environment import blank_environ_block
from conveyor.environments.build import BUILD_TIMEOUT
from conveyor.environments.db import Locks
from conveyor.environments.deploying import Preparer
from conveyor.errors import (
    BrokerUnavailableError,
    FunctionNotFoundError,
    FunctionUnavailableError,
)
from conveyor.files.intake import FileIntake
from conveyor.files.store import FileStore
from conveyor.functions.catalog import Catalog
from conveyor.functions.inspector import Inspector, Limits
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.registry import FunctionSpec, Registry
from conveyor.functions.watcher import watch_async
from conveyor.guard import Guard
from conveyor.invocations.client import InvocationClient
from conveyor.log import configure_logging, get_logger
from conveyor.maps.db import MapStore
from conveyor.metrics.prometheus import HttpMetrics
from conveyor.pipelines.checks import PipelineInspector, store_lookup
from conveyor.pipelines.db import Runs
from conveyor.pipelines.plan import Planner, Resolve
from conveyor.schedules.checks import ScheduleInspector
from conveyor.schedules.db import ScheduleStore
from conveyor.settings import Settings, get_settings
from conveyor.store.bucket import BucketBundles
from conveyor.store.db import FunctionStore
from conveyor.store.deployer import Deployer
from conveyor.store.deployments import DeploymentLog
from conveyor.store.served import Served
from conveyor.streams.db import StreamReader
from conveyor.trainings.db import TrainingIndex
from conveyor.webhooks.intake import WebhookIntake

log = get_logger(__name__)

CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]


@get("/schema", sync_to_thread=False, include_in_schema=False)
def openapi_document(
    platform: NamedDependency[Platform], caller: NamedDependency[Caller]
) -> dict[str, Any]:
    """The document, with the functions the caller may see."""
    entries = [e for e in platform.functions.entries() if caller.sees(e.name)]
    return document(entries, Options.of(platform.settings))


def app_from_environment() -> Litestar:
    """The app of one of ``[api] workers`` processes: uvicorn starts each afresh and calls
    this (``CONVEYOR_CONFIG`` and the environment say what the parent read)."""
    settings = get_settings()
    configure_logging(settings.log.level, settings.log.format)
    blank_environ_block(settings.worker.hidden_env)  # its inspectors' user code reads /proc
    return create_app(settings)


def _resolver(served: Served) -> Resolve:
    """A pipeline's steps resolved to the versions serving now (or pinned)."""

    def resolve(name: str) -> tuple[FunctionSpec, FunctionSchemas]:
        try:
            entry = served.serving(name)
        except FunctionNotFoundError as exc:
            raise FunctionUnavailableError(str(exc)) from None
        assert entry.spec is not None and entry.schemas is not None
        return entry.spec, entry.schemas

    return resolve


def create_app(settings: Settings) -> Litestar:
    invocations = InvocationClient(settings)
    webhooks = bool(settings.webhooks.secrets)
    folder = Registry(settings.functions.dir, settings.queues)
    store = FunctionStore(invocations.redis, BucketBundles.of(settings))
    served = Served(store, folder)
    environments = Preparer(settings.store.cache_dir, settings.store.uv_cache_dir)
    inspector = ScheduleInspector(
        PipelineInspector(
            Inspector(Limits.of(settings), environments.interpreter), store_lookup(store)
        )
    )
    deployer = Deployer(
        settings,
        store,
        served,
        folder,
        inspector,
        environments=environments,
        locks=Locks(invocations.redis),
    )
    platform = Platform(
        settings=settings,
        functions=served,
        deployer=deployer,
        deploys=Deploys(
            deployer,
            DeploymentLog(invocations.redis),
            settings.functions.inspect_timeout + BUILD_TIMEOUT + STALE_MARGIN,
        ),
        invocations=invocations,
        intake=WebhookIntake(Guard(tuple(settings.webhooks.allow_networks)), enabled=webhooks),
        validators=RequestValidators(webhooks=webhooks),
        maps=MapStore(invocations.redis, invocations.celery),
        map_events=Waiters(invocations.subscription, keyspace.MAP_EVENTS_CHANNEL, str),
        files=FileIntake(
            settings.files, FileStore(settings.files, sync_client(settings)), invocations.redis
        ),
        streams=StreamReader(invocations.redis, invocations.subscription),
        planner=Planner(
            invocations.celery,
            _resolver(served),
            settings.results.pending_ttl,
            settings.map.window,
            max_fanout=settings.pipelines.max_fanout,
            element_window=settings.pipelines.window,
        ),
        runs=Runs(invocations.redis),
        schedules=ScheduleStore(invocations.redis),
        trainings=TrainingIndex(invocations.redis),
        open_responses=OpenResponses(settings.api),
        api_keys=ApiKeyStore(invocations.redis, invocations.subscription)
        if settings.api.auth == "keys"
        else None,
    )
    catalog = Catalog(folder, inspector, store, deployer.on_change, environments)
    tasks = _follow_store(invocations.subscription, served, deployer)

    async def first_load() -> None:
        await catalog.settled()
        platform.loaded = True
        log.info("api_functions_loaded", functions=len(served.entries()))

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await catalog.refresh()  # before the first resync: it removes functions whose
        await invocations.start()  # folder this disk no longer has
        background = [
            asyncio.create_task(first_load(), name="conveyor-first-load"),
            asyncio.create_task(deployer.collect_forever(), name="conveyor-collect"),
            asyncio.create_task(fire_forever(platform), name="conveyor-schedules"),
            asyncio.create_task(finish_forever(platform), name="conveyor-trainings"),
            asyncio.create_task(limits_forever(platform), name="conveyor-limits"),
            asyncio.create_task(
                _sweep_files(platform.files.store, settings), name="conveyor-sweep"
            ),
        ]
        if settings.functions.watch:
            watch = watch_async(settings.functions.dir, catalog.refresh)
            background.append(asyncio.create_task(watch, name="conveyor-watch"))
        log.info("api_started", functions=len(served.entries()))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for task in list(tasks):
                task.cancel()
            await deployer.close()
            await platform.files.close()
            await catalog.close()
            await invocations.close()

    http_metrics = HttpMetrics()
    middleware: list[Any] = [DefineMiddleware(BrowserGuard, settings=settings.api)]
    if settings.metrics.enabled:
        middleware.append(http_metrics.middleware)
    cors = (
        CORSConfig(allow_origins=settings.api.cors_origins, allow_headers=CORS_HEADERS)
        if settings.api.cors_origins
        else None
    )
    return Litestar(
        route_handlers=[
            FunctionsController,
            StreamsController,
            FilesController,
            HealthController,
            ObservabilityController,
            JobsController,
            VersionsController,
            SchedulesController,
            TrainingsController,
            KeysController,
            openapi_document,
            docs_page,
            assets(),
            dashboard_assets(),
        ],
        middleware=middleware,
        cors_config=cors,
        dependencies={
            "platform": Provide(lambda: platform, use_cache=True, sync_to_thread=False),
            "caller": Provide(authenticate),
            "http_metrics": Provide(lambda: http_metrics, use_cache=True, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=reject_unknown_query,
        lifespan=[lifespan],
        openapi_config=None,  # /schema is ours: see conveyor.api.openapi
        logging_config=None,  # conveyor.log configured the process: one format, JSON lines
        request_max_body_size=settings.api.max_body_bytes,
        debug=False,
    )


async def _sweep_files(store: FileStore, settings: Settings) -> None:
    """Remove expired files that nothing holds, every ``[files] sweep_interval`` seconds
    (one API process at a time)."""
    interval = settings.files.sweep_interval
    me = uuid.uuid4().hex
    while True:
        await asyncio.sleep(interval)
        try:
            if await asyncio.to_thread(store.index.lock_sweep, me, interval):
                await asyncio.to_thread(store.sweep)
        except Exception as exc:  # Redis away: next round
            log.warning("file_sweep_failed", error=str(exc))


def _follow_store(
    subscription: Subscription, served: Served, deployer: Deployer
) -> set[asyncio.Task[None]]:
    """Reload a function when the store says it changed; resync on every (re)connection
    (whatever was published meanwhile was missed). The running tasks, to cancel at exit."""
    tasks: set[asyncio.Task[None]] = set()

    def spawn(work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def reload(name: str) -> None:
        try:
            await served.reload(name)
        except BrokerUnavailableError as exc:  # read again, all of it, once Redis answers
            log.warning("function_store_unavailable", function=name, error=str(exc))
            deployer.resync_soon()

    def changed(name: str) -> None:
        spawn(reload(name), f"conveyor-reload-{name}")

    def connected() -> None:
        deployer.resync_soon()  # not ready until it has run

    subscription.on(keyspace.FUNCTIONS_CHANNEL, changed, connected)
    return tasks
