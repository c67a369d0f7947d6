"""Invocations and map jobs as clients see them: the API's answers and a webhook's body
are the same."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from conveyor.broker.census import QueueCensus
from conveyor.files import refs
from conveyor.invocations.records import InvocationRecord
from conveyor.maps.db import MapJob, eta


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


KnownCensus = QueueCensus | None  # None: not known now (Redis unreachable)


Steps = list[dict[str, Any]] | None  # a pipeline run's steps, as pipelines.db reads them


def census_warning(census: KnownCensus, queue: str) -> str | None:
    """Why an invocation on ``queue`` may wait for nobody (None: it will not, or unknown)."""
    return None if census is None else census.warning(queue)


def result_url(record: InvocationRecord) -> str:
    kind = "trainings" if record.training is not None else "results"
    return f"/functions/{record.function}/{kind}/{record.id}"


def stream_url(record: InvocationRecord) -> dict[str, str]:
    """``{"stream_url": ...}`` for a streaming invocation, else nothing."""
    return {"stream_url": f"{result_url(record)}/stream"} if record.streaming else {}


def accepted_body(
    record: InvocationRecord, census: KnownCensus, steps: Steps = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.id,
        "function": record.function,
        "version": record.version,
        "status": record.status.value,
        "result_url": result_url(record),
        **stream_url(record),
    }
    if steps is not None:
        body["steps"] = [_step_view(step) for step in steps]
    _warn(body, record.notice, *waits(census, record, steps))
    return body


def waits(census: KnownCensus, record: InvocationRecord, steps: Steps) -> list[str | None]:
    """Why an unfinished invocation may wait for nobody: its queue's, or for a pipeline's
    run, each queue its unfinished steps wait on (named with the step)."""
    if not record.pipeline:
        return [census_warning(census, record.queue)]
    found = []
    for step in steps or []:
        queue = step.get("queue")
        if queue and step["status"] in ("pending", "running"):
            warning = census_warning(census, queue)
            if warning:
                found.append(f"step {step['name']}: {warning}")
    return list(dict.fromkeys(found))


def result_body(
    record: InvocationRecord,
    census: KnownCensus = None,
    *,
    base: str = "",
    inline: dict[str, str] | None = None,
    steps: Steps = None,
) -> dict[str, Any]:
    """An invocation as clients see it. An output's files are URLs on ``base`` (the API's
    address), or the data URIs ``inline`` holds for them (``?files=data_uri``); a
    pipeline's run has its ``steps`` (:func:`conveyor.pipelines.db.steps_view`)."""
    body: dict[str, Any] = {
        "id": record.id,
        "function": record.function,
        "version": record.version,
        "status": record.status.value,
        "queue": record.queue,
        "priority": record.priority,
        "attempts": record.attempts,
        "created_at": iso(record.created_at),
        **stream_url(record),
    }
    if record.has_output:
        body["output"] = record.output
    if record.files:
        body["output"] = with_urls(record.output, record.files, base, inline or {})
        body["files"] = [file_view(f, base) for f in record.files]
    elif record.pipeline and record.has_output:
        # A run's output is its steps': their files, owned by the run's caller, as URLs.
        body["output"] = with_urls(record.output, None, base)
    if record.error is not None:
        body["error"] = record.error
    if record.started_at is not None:
        body["started_at"] = iso(record.started_at)
    _warn(body, record.notice, *([] if record.status.final else waits(census, record, steps)))
    if record.finished_at is not None:
        body["finished_at"] = iso(record.finished_at)
        body["duration_ms"] = round((record.finished_at - record.created_at) * 1000, 3)
    if record.webhook is not None:
        body["webhook"] = record.webhook
    if record.progress is not None:
        body["progress"] = {**record.progress, "updated_at": iso(record.progress["updated_at"])}
    if steps is not None:
        body["steps"] = [_step_view(step) for step in steps]
    if record.training is not None:
        body["training"] = record.training
    if record.checkpoint is not None:
        body["checkpoint"] = {**record.checkpoint, "saved_at": iso(record.checkpoint["saved_at"])}
    return body


def _step_view(step: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in step.items() if k != "queue"}
    for field in ("started_at", "finished_at"):
        if field in step:
            shown[field] = iso(step[field])
    return shown


def file_view(meta: dict[str, Any], base: str) -> dict[str, Any]:
    """One of an output's files, as a result lists it."""
    view = {"url": refs.file_url(base, meta["id"]), **meta}
    if isinstance(view.get("expires_at"), (int, float)):
        view["expires_at"] = iso(view["expires_at"])
    return view


def with_urls(
    value: Any,
    files: list[dict[str, Any]] | None,
    base: str,
    inline: dict[str, str] | None = None,
) -> Any:
    """``value`` (an output) with each of its files' references made a URL or a data URI
    (``files``: those the record lists; None: any reference, as a map job's items hold)."""
    known = None if files is None else {f["id"] for f in files}
    inline = inline or {}

    def visit(node: Any) -> Any:
        if isinstance(node, str):
            file_id = refs.ref_id(node)
            if file_id is not None and (known is None or file_id in known):
                return inline.get(file_id) or refs.file_url(base, file_id)
            return node
        if isinstance(node, list):
            return [visit(item) for item in node]
        if isinstance(node, dict):
            return {key: visit(item) for key, item in node.items()}
        return node

    return visit(value)


def map_job_body(job: MapJob, now: float | None = None) -> dict[str, Any]:
    """A map job as clients see it: the API's answers and its webhook's body."""
    now = time.time() if now is None else now
    base = f"/functions/{job.function}/jobs/{job.id}"
    end = job.finished_at or now
    elapsed = (end - job.started_at) if job.started_at else 0.0
    body: dict[str, Any] = {
        "id": job.id,
        "function": job.function,
        "version": job.version,
        "status": job.status,
        "total": job.total,
        "counts": {
            "succeeded": job.succeeded,
            "failed": job.failed,
            "cancelled": job.cancelled,
            "expired": job.expired,
            "pending": max(job.total - job.done, 0),
        },
        "progress": round(job.done / job.total, 4) if job.total else 1.0,
        "items_per_second": round(job.done / elapsed, 2) if elapsed > 0 else None,
        "eta_seconds": eta(job, now),
        "priority": job.priority,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "status_url": base,
        "results_url": f"{base}/results",
    }
    if job.webhook is not None:
        body["webhook"] = job.webhook
    return body


def _warn(body: dict[str, Any], *notes: str | None) -> None:
    """``warning``: what the caller should know about this answer, if anything."""
    if warnings := [note for note in notes if note]:
        body["warning"] = "; ".join(warnings)


def logs_body(record: InvocationRecord, logs: str | None) -> dict[str, Any]:
    """What ``.../logs`` answers: what the last attempt printed or logged."""
    return {
        "id": record.id,
        "function": record.function,
        "status": record.status.value,
        "logs": logs or "",
    }
