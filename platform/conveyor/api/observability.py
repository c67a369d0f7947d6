"""What an operator looks at: ``/metrics`` (Prometheus), the dashboard and its data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, MediaType, Response, Router, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.static_files import create_static_files_router

from conveyor.api.controllers import waiting_body
from conveyor.api.params import QUERY, takes
from conveyor.api.schedules import schedules_body
from conveyor.api.schemas import function_body
from conveyor.api.services import Platform
from conveyor.api.trainings import trainings_body
from conveyor.auth.caller import Caller
from conveyor.auth.keys import Action
from conveyor.functions.registry import FunctionEntry
from conveyor.metrics import db as stats
from conveyor.metrics.prometheus import CONTENT_TYPE, HttpMetrics, Snapshot
from conveyor.settings import all_queues

STATIC = Path(__file__).parent / "static"  # the dashboard's page, script and style
Minutes = Annotated[float, QueryParameter(ge=1, le=30, description="how far back, in minutes")]


def _streams(entries: list[FunctionEntry]) -> dict[str, str]:
    """Batching functions -> their queue: their waiting items count in its depth."""
    return {
        e.name: e.spec.manifest.target_queue
        for e in entries
        if e.spec is not None and e.spec.manifest.batching is not None
    }


async def _depths(platform: Platform) -> dict[str, int]:
    entries = platform.functions.entries()
    return await platform.invocations.depths(all_queues(platform.settings), _streams(entries))


class ObservabilityController(Controller):
    opt = takes()

    @get("/metrics", summary="Prometheus metrics", media_type=CONTENT_TYPE)
    async def metrics(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        http_metrics: NamedDependency[HttpMetrics],
    ) -> Response[bytes]:
        caller.require_admin()
        entries = platform.functions.entries()
        census = await platform.invocations.census()
        snap = Snapshot(
            totals=await stats.totals(platform.invocations.redis),
            depths=await _depths(platform),
            workers=None if census is None else dict(census.workers),
            functions=dict(Counter(e.status for e in entries)),
        )
        return Response(http_metrics.exposition(snap), media_type=CONTENT_TYPE)

    @get("/queues", summary="Each queue's depth and workers (admin)")
    async def queues(
        self, platform: NamedDependency[Platform], caller: NamedDependency[Caller]
    ) -> dict[str, Any]:
        caller.require_admin()
        census = await platform.invocations.census()
        depths = await _depths(platform)
        return {
            "queues": {
                queue: {"depth": depth, "workers": None if census is None else census.count(queue)}
                for queue, depth in depths.items()
            }
        }

    @get("/dashboard/data", summary="What the dashboard shows", opt=takes("minutes"))
    async def dashboard_data(
        self,
        platform: NamedDependency[Platform],
        caller: NamedDependency[Caller],
        minutes: Minutes = 15,
    ) -> dict[str, Any]:
        entries = [e for e in platform.functions.entries() if caller.sees(e.name)]
        census = await platform.invocations.census()
        depths = await _depths(platform)
        windows = await stats.windows(platform.invocations.redis, minutes)
        # Only what the caller may read: a key that may invoke sees its own invocations.
        recent = [
            r
            for r in await stats.recent(platform.invocations.redis)
            if caller.may_handle(r["function"], r.get("owner"), Action.READ)
        ]
        cards = []
        for entry in entries:
            card = _card(entry, function_body(entry, detail=True, census=census), depths, windows)
            card |= await waiting_body(platform, entry)
            manifest = entry.spec.manifest if entry.spec is not None else None
            if manifest is not None and manifest.schedules:
                card["schedules"] = await schedules_body(platform, entry.name, runs=3)
            if manifest is not None and manifest.training is not None:
                card["trainings"] = await trainings_body(platform, caller, entry.name, limit=5)
            cards.append(card)
        return {
            "functions": cards,
            "recent": [_recent(r) for r in recent],
            "minutes": minutes,
        }

    @get("/dashboard", media_type=MediaType.HTML, include_in_schema=False, opt={QUERY: None})
    async def dashboard(self) -> Response[bytes]:
        return Response((STATIC / "dashboard.html").read_bytes(), media_type=MediaType.HTML)


def _card(
    entry: FunctionEntry,
    body: dict[str, Any],
    depths: Mapping[str, int],
    windows: Mapping[str, stats.Window],
) -> dict[str, Any]:
    window = windows.get(entry.name)
    queue = entry.spec.manifest.target_queue if entry.spec else None
    return {
        **body,
        "depth": depths.get(queue, 0) if queue else None,
        "window": None
        if window is None
        else {
            "times": window.times,
            "rate": window.rate,
            "errors": window.errors,
            "p50": window.p50,
            "p95": window.p95,
        },
    }


def _recent(item: dict[str, Any]) -> dict[str, Any]:
    url = f"/functions/{item['function']}/results/{item['id']}"
    duration = item.get("duration")
    return {
        "id": item["id"],
        "function": item["function"],
        "status": item["status"],
        "error_type": item.get("error_type") or None,
        "finished_at": float(item["finished_at"]) if item.get("finished_at") else None,
        "duration_ms": round(duration * 1000, 3) if isinstance(duration, int | float) else None,
        "result_url": url,
        "logs_url": url + "/logs",
    }


def assets() -> Router:
    return create_static_files_router(
        path="/dashboard/assets", directories=[STATIC], include_in_schema=False
    )
