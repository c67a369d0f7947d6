"""Invocation records: one Redis hash per invocation, changed only by atomic Lua transitions.

Celery reports PENDING for ids it never saw, so Conveyor keeps its own record: it makes
unknown ids a 404, carries timings and attempts, holds the output, and expires ``ttl``
seconds after the invocation finishes. Every transition that ends an invocation publishes
``<id> <record as JSON>`` on :data:`keyspace.EVENTS_CHANNEL` in the same script, so a
waiter never misses it and needs no further read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from conveyor.db import keyspace
from conveyor.db.scripts import script
from conveyor.metrics import db as stats


class InvocationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not started by its deadline: never run

    @property
    def final(self) -> bool:
        return self in (
            InvocationStatus.SUCCEEDED,
            InvocationStatus.FAILED,
            InvocationStatus.CANCELLED,
            InvocationStatus.EXPIRED,
        )


ACTIVE = (InvocationStatus.QUEUED, InvocationStatus.RUNNING, InvocationStatus.RETRYING)

TRANSITION = script("invocations", "transition")
START = script("invocations", "start")
UNPARK = script("invocations", "unpark")
SUBMIT = script("invocations", "submit")
DELETE = script("invocations", "delete")
WITHDRAW = script("invocations", "withdraw")
PROGRESS = script("invocations", "progress")
RUN = script("pipelines", "run")  # a pipeline run accepted: its record and first step
KEY_TAKE = script("invocations", "key_take")  # a map job's or a run's API key limits


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class InvocationRecord:
    """What the API answers about one invocation."""

    id: str
    function: str
    version: str
    status: InvocationStatus
    queue: str
    priority: int
    attempts: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    has_output: bool = False
    owner: str | None = None  # the id of the API key that made it
    webhook: dict[str, Any] | None = None  # {"url", "events", "status"?, "attempts"?, ...}
    progress: dict[str, Any] | None = None  # {"fraction", "message", "updated_at"}
    logs: str | None = None  # what the last attempt printed or logged
    files: list[dict[str, Any]] | None = None  # the output's files: id, size, sha256 ...
    streaming: bool = False  # its function streams: its events are in a stream
    pipeline: bool = False  # a pipeline's run: its steps are read from its state
    training: dict[str, Any] | None = None  # a training's options: {"promote": ...}
    checkpoint: dict[str, Any] | None = None  # its last checkpoint: bytes, saved_at, attempt
    notice: str | None = None  # for this answer only, never stored: e.g. not yet replicated

    @classmethod
    def from_hash(cls, invocation_id: str, raw: dict[str, str]) -> InvocationRecord:
        def opt(field: str) -> float | None:
            value = raw.get(field)
            return float(value) if value else None

        return cls(
            id=invocation_id,
            function=raw["function"],
            version=raw["version"],
            status=InvocationStatus(raw["status"]),
            queue=raw["queue"],
            priority=int(raw["priority"]),
            attempts=int(raw.get("attempts", 0)),
            created_at=float(raw["created_at"]),
            started_at=opt("started_at"),
            finished_at=opt("finished_at"),
            output=json.loads(raw["output"]) if "output" in raw else None,
            error=json.loads(raw["error"]) if "error" in raw else None,
            has_output="output" in raw,
            owner=raw.get("owner"),
            webhook=webhook_view(raw),
            progress=json.loads(raw["progress"]) if "progress" in raw else None,
            logs=raw.get("logs"),
            files=json.loads(raw["files"]) if raw.get("files") else None,
            streaming="stream" in raw,
            pipeline="pipeline" in raw,
            training=json.loads(raw["training"]) if "training" in raw else None,
            checkpoint=checkpoint_view(raw),
        )


def checkpoint_view(raw: dict[str, str]) -> dict[str, Any] | None:
    """A record's last checkpoint as clients see it (``checkpoints/db.py`` writes it)."""
    if not raw.get("checkpoint"):
        return None
    return {
        "bytes": int(raw.get("checkpoint_bytes", 0)),
        "saved_at": float(raw.get("checkpoint_at", 0)),
        "attempt": int(raw.get("checkpoint_attempt", 0)),
    }


def webhook_view(raw: dict[str, str]) -> dict[str, Any] | None:
    """A record's webhook as clients see it: where, which events, how delivery went."""
    if "webhook" not in raw:
        return None
    hook: dict[str, Any] = json.loads(raw["webhook"])
    if "webhook_status" in raw:
        hook["status"] = raw["webhook_status"]
        hook["attempts"] = int(raw.get("webhook_attempts", 0))
    if raw.get("webhook_error"):
        hook["last_error"] = raw["webhook_error"]
    return hook


def new_record_fields(
    function: str,
    version: str,
    queue: str,
    priority: int,
    ttl: int,
    *,
    owner: str | None = None,
    webhook: str | None = None,
    stream: bool = False,
) -> dict[str, str]:
    """A new record. ``owner``: the id of the API key that made it; ``webhook``: JSON
    ``{"url", "events"}`` of the deliveries it asked for; ``stream``: its function streams
    (its scripts add events to its stream)."""
    fields = {
        "function": function,
        "version": version,
        "status": InvocationStatus.QUEUED,
        "queue": queue,
        "priority": str(priority),
        "attempts": "0",
        "created_at": repr(now()),
        "ttl": str(ttl),
    }
    if owner is not None:
        fields["owner"] = owner
    if webhook is not None:
        fields["webhook"] = webhook
    if stream:
        fields["stream"] = "1"
    return fields


def stream_keys(invocation_id: str) -> dict[str, str]:
    """The keys by which a script adds events to the invocation's stream."""
    return {
        "stream": keyspace.stream(invocation_id),
        "stream_events": keyspace.STREAM_EVENTS_CHANNEL,
    }


@dataclass(frozen=True)
class Requeue:
    """Where a retry goes, written with the transition to ``retrying``: a task message
    pushed onto ``queue_list`` (with a sent copy, keyed by the invocation, for the stranded
    sweep, when ``copied``), and for a batch item its place in the function's delayed set."""

    queue_list: str
    message: str
    delivery_tag: str = ""
    copied: bool = False
    delayed: str = ""  # the delayed set: a batch item's entry waits there until due
    member: str = ""
    due: float = 0.0
    push: bool = True  # False: only the copy (kombu is to redeliver the message itself)

    def values(self) -> dict[str, Any]:
        """The retry's keys and arguments of :data:`TRANSITION`."""
        sent = self.copied
        return {
            "retry_list": self.queue_list,
            "retry_copied": "1" if sent else "",
            "sent_sequence": keyspace.sent_sequence(self.queue_list) if sent else "",
            "delayed": self.delayed,
            "retry_message": self.message,
            "retry_tag": self.delivery_tag,
            "retry_member": self.member,
            "retry_due": repr(self.due),
            "retry_push": "1" if self.push else "0",
        }


_NO_REQUEUE = dict.fromkeys(Requeue(queue_list="", message="").values(), "")  # no retry


def transition_args(
    invocation_id: str,
    allowed: tuple[InvocationStatus, ...],
    to: InvocationStatus,
    *,
    metrics: bool = True,
    requeue: Requeue | None = None,
    **fields: str,
) -> dict[str, Any]:
    """The keys and arguments of :data:`TRANSITION`, by name.

    A final status publishes the id, stamps finished_at and starts the result's TTL; with
    ``metrics`` (``[metrics] enabled``) it is counted too. ``requeue``: the retry that goes
    with a change to ``retrying``.
    """
    ttl = "0"
    if to.final:
        fields.setdefault("finished_at", repr(now()))
        ttl = "record"
    return {
        "record": keyspace.record(invocation_id),
        "events": keyspace.EVENTS_CHANNEL,
        "delivery": keyspace.webhook_delivery(invocation_id, "completed"),
        "due": keyspace.WEBHOOKS_DUE,
        "wake": keyspace.WEBHOOKS_WAKE,
        **counted_keys(metrics),
        "in_use": keyspace.VERSIONS_IN_USE,
        "sent": keyspace.SENT,  # a pipeline's next step keeps its messages' copies there
        "sent_messages": keyspace.SENT_MESSAGES,
        **(requeue.values() if requeue else _NO_REQUEUE),
        **stream_keys(invocation_id),
        "waiting": keyspace.WAITING,
        "deadlines": keyspace.DEADLINES,
        "slots_prefix": keyspace.SLOTS_PREFIX,
        "parked_prefix": keyspace.PARKED_PREFIX,
        "usage": keyspace.KEY_USAGE,
        "allowed": " ".join(allowed),
        "to": to.value,
        "ttl": ttl,
        "final": "1" if to.final else "0",
        "id": invocation_id,
        "fields": [value for pair in fields.items() for value in pair],
    }


def _counted() -> dict[str, str]:
    """The keys of TRANSITION's counting (this moment's dashboard bucket among them)."""
    return {
        "invocations": keyspace.METRICS_INVOCATIONS,
        "failures": keyspace.METRICS_FAILURES,
        "durations": keyspace.METRICS_DURATION,
        "retries": keyspace.METRICS_RETRIES,
        "bucket": stats.stats_bucket(),
        "recent": keyspace.RECENT,
    }


def counted_keys(metrics: bool) -> dict[str, str]:
    """The counters' keys, or '' each when ``[metrics] enabled`` is false."""
    return _counted() if metrics else dict.fromkeys(_counted(), "")


UNPARK_EVERY = 0.25  # seconds between an API process's moves of parked messages (api/limits)


def limit_keys(function: str, *, limited: bool, rated: bool) -> dict[str, str]:
    """The keys of ``function``'s [limits] concurrency (``slots``, ``parked``) and rate
    (``rate_key``, ``rate_parked``), '' each without: invocations/lua/slots and rate."""
    return {
        "slots": keyspace.slots(function) if limited else "",
        "parked": keyspace.parked(function) if limited else "",
        "rate_key": keyspace.rate(function) if rated else "",
        "rate_parked": keyspace.rate_parked(function) if rated else "",
    }


@dataclass(frozen=True)
class Slot:
    """What :data:`START` needs for a function with ``[limits] concurrency`` or ``rate``:
    the limit (None: none), the lease a slot is taken for, the seconds between two starts,
    and the message to park when it may not start yet."""

    function: str
    concurrency: int | None
    lease: float
    emission: float | None
    queue_list: str
    message: str

    def values(self) -> dict[str, str]:
        limited, rated = self.concurrency is not None, self.emission is not None
        return {
            **limit_keys(self.function, limited=limited, rated=rated),
            "concurrency": str(self.concurrency or ""),
            "lease_end": repr(time.time() + self.lease),
            "emission": repr(self.emission or 0.0),
            "park_list": self.queue_list,
            "park_message": self.message,
        }


_NO_SLOT = dict.fromkeys(
    (
        "slots",
        "parked",
        "rate_key",
        "rate_parked",
        "concurrency",
        "lease_end",
        "emission",
        "park_list",
        "park_message",
    ),
    "",
)


def start_args(
    invocation_id: str, pid: int, *, metrics: bool = True, slot: Slot | None = None
) -> dict[str, Any]:
    """The keys and arguments of :data:`START`, by name."""
    return {
        **(slot.values() if slot is not None else _NO_SLOT),
        "record": keyspace.record(invocation_id),
        "delivery": keyspace.webhook_delivery(invocation_id, "start"),
        "due": keyspace.WEBHOOKS_DUE,
        "wake": keyspace.WEBHOOKS_WAKE,
        "queue_wait": keyspace.METRICS_QUEUE_WAIT if metrics else "",
        "redeliveries": keyspace.METRICS_REDELIVERIES if metrics else "",
        "sent": keyspace.SENT,
        "sent_messages": keyspace.SENT_MESSAGES,
        **stream_keys(invocation_id),
        "waiting": keyspace.WAITING,
        "deadlines": keyspace.DEADLINES,
        "usage": keyspace.KEY_USAGE,
        "now": repr(time.time()),
        "pid": str(pid),
        "id": invocation_id,
    }
