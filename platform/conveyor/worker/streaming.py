"""A streaming attempt's side of its stream, in the pool child that runs it: each chunk
goes out with the lines printed since the one before, in one step."""

from __future__ import annotations

import redis

from conveyor.errors import StreamTooLargeError
from conveyor.log import get_logger
from conveyor.runtime.capture import OutputCapture
from conveyor.runtime.streaming import StreamStopped
from conveyor.streams.db import StreamWriter
from conveyor.streams.events import EventKind, log_event, output_event

log = get_logger(__name__)


class AttemptStream:
    """The :class:`~conveyor.runtime.streaming.ChunkSink` of one attempt."""

    def __init__(self, writer: StreamWriter, redelivered: bool, capture: OutputCapture) -> None:
        self.writer = writer
        self.redelivered = redelivered
        self.capture = capture

    def chunk(self, encoded: str) -> None:
        events = self._logs(final=False)
        attempt = self.writer.attempt
        events.append((EventKind.OUTPUT, output_event(attempt, self.redelivered, encoded)))
        self.writer.add(events)

    def flush(self) -> None:
        """The lines printed since the last chunk, as the attempt ends (before its
        outcome's events); quietly nothing when it no longer runs or Redis is away."""
        events = self._logs(final=True)
        if not events:
            return
        try:
            self.writer.add(events)
        except (StreamStopped, StreamTooLargeError, redis.RedisError) as exc:
            log.info("stream_logs_not_added", reason=str(exc))

    def _logs(self, *, final: bool) -> list[tuple[str, str]]:
        attempt = self.writer.attempt
        return [
            (EventKind.LOG, log_event(attempt, self.redelivered, line))
            for line in self.capture.lines(final=final)
        ]
