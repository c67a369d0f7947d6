"""An invocation as clients see it: the API's answers and a webhook's body are the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conveyor.queueing.census import QueueCensus
from conveyor.queueing.jobs import JobRecord


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


Census = QueueCensus | None  # None: not known now (Redis unreachable)


def census_warning(census: Census, queue: str) -> str | None:
    """Why an invocation on ``queue`` may wait for nobody (None: it will not, or unknown)."""
    return None if census is None else census.warning(queue)


def result_url(record: JobRecord) -> str:
    return f"/functions/{record.function}/results/{record.id}"


def accepted_body(record: JobRecord, census: Census) -> dict[str, Any]:
    body = {
        "id": record.id,
        "function": record.function,
        "version": record.version,
        "status": record.status.value,
        "result_url": result_url(record),
    }
    if warning := census_warning(census, record.queue):
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
    if not record.status.final and (warning := census_warning(census, record.queue)):
        body["warning"] = warning
    if record.finished_at is not None:
        body["finished_at"] = iso(record.finished_at)
        body["duration_ms"] = round((record.finished_at - record.created_at) * 1000, 3)
    if record.webhook is not None:
        body["webhook"] = record.webhook
    if record.progress is not None:
        body["progress"] = {**record.progress, "updated_at": iso(record.progress["updated_at"])}
    return body
