"""Building the broker message for one invocation, so it can be stored atomically.

The API writes the job record and pushes the message in one Redis transaction (a 202 is a
promise: there is never a record without its message, or a message without its record).
That means writing to the list kombu's Redis transport reads, in its envelope format:
Celery's own ``as_task_v2`` builds the task message; this module wraps it the way
``kombu.transport.virtual.Channel.basic_publish`` does. The integration tests run real
workers on these messages, so a kombu change that breaks the format fails them.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from conveyor.queueing import keys
from conveyor.queueing.celery_app import (
    BATCH_TASK_NAME,
    HIGHEST_PRIORITY,
    TASK_NAME,
    broker_priority,
)


@dataclass(frozen=True)
class Invocation:
    """What a worker needs to run one invocation."""

    id: str
    function: str
    version: str
    input: Any
    queue: str
    priority: int
    timeout: float
    soft_timeout: float | None


def encode_message(
    app: Celery,
    inv: Invocation,
    *,
    countdown: float | None = None,
    delivery_tag: str | None = None,
    priority: int | None = None,
) -> tuple[str, str]:
    """The Redis list to push to and the JSON envelope of one invocation's task; its
    delivery tag is the invocation's id (kombu's unacked hash is keyed by it). A retry's
    message is due in ``countdown`` seconds, with its own ``delivery_tag`` and the broker
    ``priority`` the first message had."""
    kwargs = {
        "invocation_id": inv.id,
        "function": inv.function,
        "version": inv.version,
        "input": inv.input,
    }
    return encode_task(
        app,
        inv.id,
        TASK_NAME,
        kwargs,
        inv,
        countdown=countdown,
        delivery_tag=delivery_tag or inv.id,
        priority=priority,
    )


def encode_batch_trigger(
    app: Celery, inv: Invocation, countdown: float | None = None, task_id: str | None = None
) -> tuple[str, str]:
    """A ``conveyor.batch`` task: drain ``inv.function``'s stream of waiting items."""
    kwargs = {"function": inv.function, "version": inv.version}
    task_id = task_id or str(uuid.uuid4())
    return encode_task(app, task_id, BATCH_TASK_NAME, kwargs, inv, countdown=countdown)


def encode_task(
    app: Celery,
    task_id: str,
    name: str,
    kwargs: dict[str, Any],
    inv: Invocation,
    *,
    countdown: float | None = None,
    below: bool = False,
    delivery_tag: str | None = None,
    priority: int | None = None,
) -> tuple[str, str]:
    """The list to push to and the envelope of one task message; ``below``: one priority
    step under ``inv.priority`` (a map job's chunks yield to single invocations)."""
    task = app.amqp.as_task_v2(
        task_id,
        name,
        args=(),
        kwargs=kwargs,
        time_limit=inv.timeout,  # type: ignore[arg-type]  # floats work; the stubs say int
        soft_time_limit=inv.soft_timeout,  # type: ignore[arg-type]
        shadow=inv.function,
        ignore_result=True,
        countdown=countdown,
        # Celery would saferepr() the whole input for logs and Flower; name it instead.
        argsrepr="()",
        kwargsrepr=f"{{'function': {inv.function!r}, 'id': {task_id!r}}}",
    )
    body = json.dumps(task.body, separators=(",", ":"))
    if priority is None:  # else: the broker's priority, as a message delivered had it
        priority = min(broker_priority(inv.priority) + (1 if below else 0), HIGHEST_PRIORITY)
    envelope = {
        "body": base64.b64encode(body.encode()).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": task.headers,
        "properties": {
            **task.properties,
            "delivery_mode": 2,
            "priority": priority,
            "body_encoding": "base64",
            "delivery_info": {"exchange": inv.queue, "routing_key": inv.queue},
            "delivery_tag": delivery_tag or str(uuid.uuid4()),
        },
    }
    return keys.queue_list(inv.queue, priority), json.dumps(envelope, separators=(",", ":"))
