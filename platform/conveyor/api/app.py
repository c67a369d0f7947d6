"""The Litestar app factory: ``create_app(settings)``.

On start-up it scans the functions and starts inspecting them (in subprocesses: no user
code runs here), the hot-reload watcher and the queue client's event listener; controllers
get a :class:`Platform` by dependency injection. ``/readyz`` answers 200 once the functions
found at start are inspected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, get
from litestar.di import NamedDependency, Provide

from conveyor.api.auth import authenticate
from conveyor.api.controllers import FunctionsController, HealthController, Platform
from conveyor.api.docs import assets, docs_page
from conveyor.api.jobs import JobsController
from conveyor.api.observability import ObservabilityController
from conveyor.api.observability import assets as dashboard_assets
from conveyor.api.openapi import Options, document
from conveyor.api.problems import EXCEPTION_HANDLERS
from conveyor.api.validation import RequestValidators
from conveyor.auth.caller import Caller
from conveyor.functions.catalog import Catalog
from conveyor.functions.inspector import Inspector, Limits
from conveyor.functions.registry import Registry
from conveyor.functions.watcher import watch_async
from conveyor.log import get_logger
from conveyor.metrics import HttpMetrics
from conveyor.queueing import keys
from conveyor.queueing.client import QueueClient
from conveyor.queueing.key_store import KeyStore
from conveyor.queueing.maps import MapStore
from conveyor.queueing.schema_cache import RedisSchemaCache
from conveyor.queueing.waiters import Wakeups
from conveyor.settings import Settings
from conveyor.webhooks.guard import Guard
from conveyor.webhooks.intake import WebhookIntake

log = get_logger(__name__)


@get("/schema", sync_to_thread=False, include_in_schema=False)
def openapi_document(
    platform: NamedDependency[Platform], caller: NamedDependency[Caller]
) -> dict[str, Any]:
    """The document, with the functions the caller may see."""
    entries = [e for e in platform.registry.entries() if caller.sees(e.name)]
    return document(entries, Options.of(platform.settings))


def create_app(settings: Settings) -> Litestar:
    queue = QueueClient(settings)
    webhooks = bool(settings.webhooks.secrets)
    platform = Platform(
        settings=settings,
        registry=Registry(settings.functions.dir, settings.queues, import_code=False),
        queue=queue,
        intake=WebhookIntake(Guard(tuple(settings.webhooks.allow_networks)), enabled=webhooks),
        validators=RequestValidators(webhooks=webhooks),
        maps=MapStore(queue.redis, queue.celery),
        map_events=Wakeups(queue.subscription, keys.MAP_EVENTS_CHANNEL),
        keys=KeyStore(queue.redis, queue.subscription) if settings.api.auth == "keys" else None,
    )
    limits = Limits(settings.functions.inspect_timeout, settings.functions.inspect_memory)
    catalog = Catalog(platform.registry, Inspector(limits), RedisSchemaCache(queue.redis))

    async def first_load() -> None:
        await catalog.settled()
        platform.loaded = True
        log.info("api_functions_loaded", functions=len(platform.registry.entries()))

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await queue.start()
        await catalog.refresh()
        background = [asyncio.create_task(first_load(), name="conveyor-first-load")]
        if settings.functions.watch:
            watch = watch_async(settings.functions.dir, catalog.refresh)
            background.append(asyncio.create_task(watch, name="conveyor-watch"))
        log.info("api_started", functions=len(platform.registry.entries()))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await catalog.close()
            await queue.close()

    http_metrics = HttpMetrics()
    return Litestar(
        route_handlers=[
            FunctionsController,
            HealthController,
            ObservabilityController,
            JobsController,
            openapi_document,
            docs_page,
            assets(),
            dashboard_assets(),
        ],
        middleware=[http_metrics.middleware] if settings.metrics.enabled else [],  # type: ignore[list-item]
        dependencies={
            "platform": Provide(lambda: platform, use_cache=True, sync_to_thread=False),
            "keys": Provide(lambda: platform.keys, use_cache=True, sync_to_thread=False),
            "caller": Provide(authenticate),
            "http_metrics": Provide(lambda: http_metrics, use_cache=True, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=None,  # /schema is ours: see conveyor.api.openapi
        logging_config=None,  # conveyor.log configured the process: one format, JSON lines
        request_max_body_size=settings.api.max_body_bytes,
        debug=False,
    )
