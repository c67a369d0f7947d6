"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.functions.registry import FunctionEntry
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


def accepted_body(record: JobRecord, result_url: str) -> dict[str, Any]:
    return {
        "id": record.id,
        "function": record.function,
        "version": record.version,
        "status": record.status.value,
        "result_url": result_url,
    }


def result_body(record: JobRecord) -> dict[str, Any]:
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
    if record.has_output:
        body["output"] = record.output
    if record.error is not None:
        body["error"] = record.error
    if record.started_at is not None:
        body["started_at"] = iso(record.started_at)
    if record.finished_at is not None:
        body["finished_at"] = iso(record.finished_at)
        body["duration_ms"] = round((record.finished_at - record.created_at) * 1000, 3)
    return body


def function_body(entry: FunctionEntry, *, detail: bool) -> dict[str, Any]:
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
        )
    if detail and entry.loaded is not None:
        body["input_schema"] = entry.loaded.input_schema()
    return body
