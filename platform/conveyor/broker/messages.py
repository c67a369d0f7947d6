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
import re
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from conveyor.broker.app import (
    BATCH_TASK_NAME,
    HIGHEST_PRIORITY,
    MAP_TASK_NAME,
    TASK_NAME,
    broker_priority,
)
from conveyor.db import keyspace
from conveyor.functions.manifest import Manifest

MAX_CHUNK_TIMEOUT = 24 * 3600.0  # seconds: the longest hard limit of a map chunk


@dataclass(frozen=True)
class Route:
    """Where a function's task messages go and the limits they carry."""

    function: str
    queue: str
    priority: int
    timeout: float
    soft_timeout: float | None

    @classmethod
    def of(cls, function: str, m: Manifest, priority: int | None = None) -> Route:
        """The route a manifest declares (``priority``: this request's, if it names one)."""
        return cls(
            function=function,
            queue=m.target_queue,
            priority=m.queue.priority if priority is None else priority,
            timeout=m.limits.timeout,
            soft_timeout=m.limits.soft_timeout,
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
    training: dict[str, Any] | None = None  # a training's options ({"promote": ...})

    @property
    def route(self) -> Route:
        return Route(self.function, self.queue, self.priority, self.timeout, self.soft_timeout)


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
    if inv.training is not None:
        kwargs["training"] = inv.training
    return encode_task(
        app,
        inv.id,
        TASK_NAME,
        kwargs,
        inv.route,
        countdown=countdown,
        delivery_tag=delivery_tag or inv.id,
        priority=priority,
    )


def encode_batch_trigger(
    app: Celery,
    route: Route,
    version: str,
    countdown: float | None = None,
    task_id: str | None = None,
) -> tuple[str, str]:
    """A ``conveyor.batch`` task: drain the stream of ``route.function``'s waiting items."""
    kwargs = {"function": route.function, "version": version}
    task_id = task_id or str(uuid.uuid4())
    return encode_task(app, task_id, BATCH_TASK_NAME, kwargs, route, countdown=countdown)


def encode_task(
    app: Celery,
    task_id: str,
    name: str,
    kwargs: dict[str, Any],
    route: Route,
    *,
    countdown: float | None = None,
    below: bool = False,
    delivery_tag: str | None = None,
    priority: int | None = None,
    plain: bool = False,
) -> tuple[str, str]:
    """The list to push to and the envelope of one task message; ``below``: one priority
    step under ``route.priority`` (a map job's chunks yield to single invocations);
    ``plain``: the body as JSON text rather than base64 (kombu reads both), so a script
    can fill in a template's markers."""
    task = app.amqp.as_task_v2(
        task_id,
        name,
        args=(),
        kwargs=kwargs,
        time_limit=route.timeout,  # type: ignore[arg-type]  # floats work; the stubs say int
        soft_time_limit=route.soft_timeout,  # type: ignore[arg-type]
        shadow=route.function,
        ignore_result=True,
        countdown=countdown,
        # Celery would saferepr() the whole input for logs and Flower; name it instead.
        argsrepr="()",
        kwargsrepr=f"{{'function': {route.function!r}, 'id': {task_id!r}}}",
    )
    body = json.dumps(task.body, separators=(",", ":"))
    if priority is None:  # else: the broker's priority, as a message delivered had it
        priority = min(broker_priority(route.priority) + (1 if below else 0), HIGHEST_PRIORITY)
    properties = {
        **task.properties,
        "delivery_mode": 2,
        "priority": priority,
        "body_encoding": "base64",
        "delivery_info": {"exchange": route.queue, "routing_key": route.queue},
        "delivery_tag": delivery_tag or str(uuid.uuid4()),
    }
    if plain:
        del properties["body_encoding"]
    envelope = {
        "body": body if plain else base64.b64encode(body.encode()).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": task.headers,
        "properties": properties,
    }
    return keyspace.queue_list(route.queue, priority), json.dumps(envelope, separators=(",", ":"))


def chunk_message(
    app: Celery, job_id: str, fields: dict[str, str], chunk: int, n: int
) -> tuple[str, str, str]:
    """The Redis list, the ``conveyor.map`` message of chunk ``chunk`` (``n`` items), one
    priority step below the job's, with a hard limit of ``n`` items' time limits, and its
    task id (its delivery tag too, which the sent copy of the message names)."""
    route, kwargs = _chunk(fields, n, job_id, chunk)
    task_id = str(uuid.uuid4())
    queue_list, message = encode_task(
        app, task_id, MAP_TASK_NAME, kwargs, route, below=True, delivery_tag=task_id
    )
    return queue_list, message, task_id


def _chunk(
    fields: dict[str, str], n: int, job_id: str, chunk: int | str
) -> tuple[Route, dict[str, Any]]:
    """A chunk's route (a hard limit of its ``n`` items' limits) and its task's kwargs."""
    timeout = float(fields["timeout"])
    route = Route(
        fields["function"],
        fields["queue"],
        int(fields["priority"]),
        min(timeout * n + 30, MAX_CHUNK_TIMEOUT),
        None,
    )
    kwargs = {
        "job": job_id,
        "function": fields["function"],
        "version": fields["version"],
        "chunk": chunk,
    }
    return route, kwargs


def delay_message(
    app: Celery, job_id: str, fields: dict[str, str], seconds: float
) -> tuple[str, str]:
    """A ``conveyor.map`` message with no chunk (``-1``): feed retries once they are due."""
    route = Route(fields["function"], fields["queue"], int(fields["priority"]), 60.0, None)
    kwargs = {
        "job": job_id,
        "function": fields["function"],
        "version": fields["version"],
        "chunk": -1,
    }
    return encode_task(
        app,
        str(uuid.uuid4()),
        MAP_TASK_NAME,
        kwargs,
        route,
        countdown=max(seconds, 0.0),
        below=True,
    )


# A message template's markers: the invocation's id, and (in the body, a JSON string inside
# the envelope) its input. pipelines/lua/advance fills them in.
TEMPLATE_ID = "00000000-0000-4000-8000-0000007e3a1e"
_TEMPLATE_JOB = "00000000-0000-4000-8000-0000000000b0"
_TEMPLATE_INPUT = "@@conveyor-input@@"
_TEMPLATE_CHUNK = "@@conveyor-chunk@@"


def _in_body(value: str) -> str:
    """How a JSON string value of the body reads inside the envelope (escaped quotes)."""
    return json.dumps(json.dumps(value))[1:-1]


_MARKS = {
    TEMPLATE_ID: "id",
    _TEMPLATE_JOB: "job",
    _in_body(_TEMPLATE_INPUT): "input",  # a JSON value: filled in escaped
    _in_body(_TEMPLATE_CHUNK): "chunk",  # a number, quotes and all replaced
}
_MARKERS = re.compile("(" + "|".join(re.escape(m) for m in _MARKS) + ")")


def template_parts(envelope: str) -> list[str]:
    """A template split at its markers: text, marker ("id", "job", "input" or "chunk"),
    text, ..."""
    parts = _MARKERS.split(envelope)
    return [p if i % 2 == 0 else _MARKS[p] for i, p in enumerate(parts)]


def message_template(app: Celery, route: Route, version: str) -> tuple[str, list[str]]:
    """The list and the parts (:func:`template_parts`) of an invocation's message whose id
    and input a script fills in: a pipeline step's, queued as the step before it ends."""
    kwargs = {
        "invocation_id": TEMPLATE_ID,
        "function": route.function,
        "version": version,
        "input": _TEMPLATE_INPUT,
    }
    queue_list, envelope = encode_task(
        app, TEMPLATE_ID, TASK_NAME, kwargs, route, delivery_tag=TEMPLATE_ID, plain=True
    )
    return queue_list, template_parts(envelope)


def trigger_template(app: Celery, route: Route, version: str) -> tuple[str, list[str]]:
    """The list and parts of a batching function's drain trigger, its id a marker."""
    kwargs = {"function": route.function, "version": version}
    queue_list, envelope = encode_task(
        app, TEMPLATE_ID, BATCH_TASK_NAME, kwargs, route, delivery_tag=TEMPLATE_ID, plain=True
    )
    return queue_list, template_parts(envelope)


def chunk_template(app: Celery, fields: dict[str, str], n: int) -> tuple[str, list[str]]:
    """The list and parts of a ``conveyor.map`` chunk of ``n`` items of a for_each step's
    map job, its task id, job and chunk number markers (see :func:`chunk_message`)."""
    route, kwargs = _chunk(fields, n, _TEMPLATE_JOB, _TEMPLATE_CHUNK)
    queue_list, envelope = encode_task(
        app,
        TEMPLATE_ID,
        MAP_TASK_NAME,
        kwargs,
        route,
        below=True,
        delivery_tag=TEMPLATE_ID,
        plain=True,
    )
    return queue_list, template_parts(envelope)
