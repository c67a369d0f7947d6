"""A streaming attempt's side of its stream, in the pool child that runs it.

Each chunk goes out with the lines printed since the one before. A sender thread adds
them to the stream, so the generator never waits for Redis: whatever was made while the
last call ran goes in the next one, in order. What the stream answers comes back at the
next yield: the attempt no longer runs (cancelled: :class:`StreamStopped` closes the
generator there) or the stream is full (:class:`StreamTooLargeError` fails it).
"""

from __future__ import annotations

import threading
from collections import deque

import redis

from conveyor.errors import StreamTooLargeError
from conveyor.log import get_logger
from conveyor.runtime.capture import OutputCapture
from conveyor.runtime.streaming import StreamStopped
from conveyor.streams.db import StreamWriter
from conveyor.streams.events import EventKind, log_event, output_event

log = get_logger(__name__)

BATCH_BYTES = 1024 * 1024  # at most this much of waiting events in one call
Events = list[tuple[str, str]]


class AttemptStream:
    """The :class:`~conveyor.runtime.streaming.ChunkSink` of one attempt."""

    def __init__(self, writer: StreamWriter, redelivered: bool, capture: OutputCapture) -> None:
        self.writer = writer
        self.redelivered = redelivered
        self.capture = capture
        self._waiting: deque[tuple[str, str]] = deque()
        self._busy = threading.Condition()
        self._sending = False
        self._closed = False  # the attempt ended: the sender thread ends when idle
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def chunk(self, encoded: str) -> None:
        if self._failure is not None:
            raise self._failure
        events = self._logs(final=False)
        attempt = self.writer.attempt
        events.append((EventKind.OUTPUT, output_event(attempt, self.redelivered, encoded)))
        self._send(events)

    def close(self, *, quiet: bool = False) -> None:
        """Send the lines printed since the last chunk and wait until everything is in
        the stream, before the attempt's outcome is written. Unless ``quiet`` (the attempt
        failed anyway), raise what the stream answered."""
        self._send(self._logs(final=True))
        with self._busy:
            self._busy.wait_for(lambda: not self._waiting and not self._sending)
            self._closed = True
            self._busy.notify_all()
        if self._failure is not None and not quiet:
            raise self._failure

    def _logs(self, *, final: bool) -> Events:
        attempt = self.writer.attempt
        return [
            (EventKind.LOG, log_event(attempt, self.redelivered, line))
            for line in self.capture.lines(final=final)
        ]

    def _send(self, events: Events) -> None:
        if not events or self._failure is not None:
            return
        with self._busy:
            self._waiting.extend(events)
            self._busy.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="conveyor-stream", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._busy:
                self._busy.wait_for(lambda: bool(self._waiting) or self._closed)
                if not self._waiting:
                    return
                batch, size = [], 0
                while self._waiting and size < BATCH_BYTES:
                    event = self._waiting.popleft()
                    batch.append(event)
                    size += len(event[1])
                self._sending = True
            try:
                self.writer.add(batch)
            except (StreamStopped, StreamTooLargeError, redis.RedisError) as exc:
                self._failure = exc
                log.info("stream_stopped", reason=str(exc))
            finally:
                with self._busy:
                    self._sending = False
                    if self._failure is not None:
                        self._waiting.clear()
                    self._busy.notify_all()
