"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.functions.registry import FunctionEntry
from conveyor.queueing.census import QueueCensus
from conveyor.queueing.jobs import JobRecord


class InvokeRequest(BaseModel):
    """Body of ``POST /functions/{name}/invoke``."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(..., description="the function's input; see its input schema")
    priority: int | None = Field(None, ge=0, le=9, description="0..9, 9 = most urgent")
    webhook: Any = Field(None, description="not supported yet; must be absent")

    @field_validator("webhook")
    @classmethod
    def _no_webhooks(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "webhook delivery is not supported yet; read result_url (with ?wait=S) instead"
            )


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


Census = QueueCensus | None  # None: not known now (Redis unreachable)


def _warning(census: Census, queue: str) -> str | None:
    return None if census is None else census.warning(queue)


def accepted_body(record: JobRecord, result_url: str, census: Census) -> dict[str, Any]:
    body = {
        "id": record.id,
        "function": record.function,
        "version": record.version,
        "status": record.status.value,
        "result_url": result_url,
    }
    if warning := _warning(census, record.queue):
        body["warning"] = warning
    return body


def result_body(record: JobRecord, census: Census = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.id,
        "function": record.function,
        "version": record.version,
        "status": record.status.value,
        "queue": record.queue,
        "priority": record.priority,
        "attempts": record.attempts,
        "created_at": iso(record.created_at),
    }
    if record.submitted_version is not None:
        body["submitted_version"] = record.submitted_version  # the worker ran another copy
    if record.has_output:
        body["output"] = record.output
    if record.error is not None:
        body["error"] = record.error
    if record.started_at is not None:
        body["started_at"] = iso(record.started_at)
    if not record.status.final and (warning := _warning(census, record.queue)):
        body["warning"] = warning
    if record.finished_at is not None:
        body["finished_at"] = iso(record.finished_at)
        body["duration_ms"] = round((record.finished_at - record.created_at) * 1000, 3)
    return body


def function_body(entry: FunctionEntry, *, detail: bool, census: Census) -> dict[str, Any]:
    spec = entry.spec
    body: dict[str, Any] = {
        "name": entry.name,
        "version": spec.version if spec else None,
        "status": entry.status,
    }
    if entry.error is not None:
        body["error"] = entry.error
        body["error_version"] = entry.error_version
    if spec is not None:
        manifest = spec.manifest
        body.update(
            description=manifest.function.description,
            queue=manifest.queue.name,
            priority=manifest.queue.priority,
            gpu=manifest.resources.gpu,
            batching=manifest.batching.model_dump() if manifest.batching else None,
            timeout=manifest.limits.timeout,
            invoke_url=f"/functions/{entry.name}/invoke",
            input_schema_url=f"/functions/{entry.name}",
            target_queue=manifest.target_queue,
            workers=None if census is None else census.count(manifest.target_queue),
            autoscaled=census is not None and manifest.target_queue in census.autoscaled,
        )
        if warning := _warning(census, manifest.target_queue):
            body["warning"] = warning
    if detail and entry.loaded is not None:
        body["input_schema"] = entry.loaded.input_schema()
    return body
