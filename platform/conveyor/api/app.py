"""The Litestar app factory: ``create_app(settings)``.

On start-up it loads the functions, starts the hot-reload watcher and the queue client's
event listener; controllers get a :class:`Platform` by dependency injection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, get
from litestar.di import NamedDependency, Provide
from litestar.openapi import OpenAPIConfig

import conveyor
from conveyor.api.controllers import FunctionsController, HealthController, Platform
from conveyor.api.openapi import function_paths
from conveyor.api.problems import EXCEPTION_HANDLERS
from conveyor.functions.registry import Registry
from conveyor.functions.watcher import watch_async
from conveyor.log import get_logger
from conveyor.queueing.client import QueueClient
from conveyor.settings import Settings

log = get_logger(__name__)


@get("/schema", include_in_schema=False, sync_to_thread=False)
def openapi_document(
    request: Request[Any, Any, Any], platform: NamedDependency[Platform]
) -> dict[str, Any]:
    return function_paths(platform.registry, request.app.openapi_schema.to_schema())


def create_app(settings: Settings) -> Litestar:
    platform = Platform(
        settings=settings,
        registry=Registry(settings.functions.dir, settings.queues, import_code=True),
        queue=QueueClient(settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await asyncio.to_thread(platform.registry.refresh)
        platform.loaded = True
        await platform.queue.start()
        watcher = None
        if settings.functions.watch:
            watcher = asyncio.create_task(watch_async(platform.registry), name="conveyor-watch")
        log.info("api_started", functions=len(platform.registry.entries()))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await platform.queue.close()

    return Litestar(
        route_handlers=[FunctionsController, HealthController, openapi_document],
        dependencies={"platform": Provide(lambda: platform, use_cache=True, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Conveyor", version=conveyor.__version__, path="/docs"),
        request_max_body_size=settings.api.max_body_bytes,
        debug=False,
    )
