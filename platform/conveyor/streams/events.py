"""A stream's events, and how they are written as Server-Sent Events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    STATUS = "status"  # queued (with how many wait ahead), running, retrying
    OUTPUT = "output"  # one chunk, with the attempt that made it
    LOG = "log"  # a line the handler printed
    PROGRESS = "progress"  # what context.current().progress(...) said
    ERROR = "error"  # an attempt failed
    DONE = "done"  # the last: the final result
    STEP = "step"  # a pipeline's run: one of its steps started, succeeded or failed


@dataclass(frozen=True)
class Event:
    """One event of a stream: its number (1, 2 ...), kind and data (JSON)."""

    seq: int
    kind: str
    data: str

    @classmethod
    def published(cls, payload: str) -> Event:
        """A message of the stream-events channel (``<invocation id> <n> <kind> <data>``:
        the id is what its waiters are found by)."""
        _, seq, kind, data = payload.split(" ", 3)
        return cls(int(seq), kind, data)

    @classmethod
    def entry(cls, entry_id: str, fields: dict[str, str]) -> Event:
        """An entry of the Redis stream (its id is ``<seq>-0``)."""
        return cls(int(entry_id.partition("-")[0]), fields["e"], fields["d"])

    def value(self) -> Any:
        return json.loads(self.data)


def sse(event: Event, data: str | None = None) -> bytes:
    """``event`` as ``text/event-stream`` (``data``: what to send in place of its own)."""
    body = event.data if data is None else data
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {body}\n\n".encode()


# A comment line alone: no blank line after it, so no reader dispatches an empty event.
KEEP_ALIVE = b": keep-alive\n"


def output_event(attempt: int, redelivered: bool, encoded: str) -> str:
    """An output event's data, built around the chunk's JSON without parsing it again."""
    again = ',"redelivered":true' if redelivered else ""
    return f'{{"attempt":{attempt}{again},"output":{encoded}}}'


def log_event(attempt: int, redelivered: bool, line: str) -> str:
    event: dict[str, Any] = {"attempt": attempt, "line": line}
    if redelivered:
        event["redelivered"] = True
    return json.dumps(event, ensure_ascii=False)
