"""What a handler prints or logs while it runs, kept for that invocation.

During ``predict`` (or ``predict_batch``) the process's file descriptors 1 and 2 point at a
temporary file, so ``print``, ``sys.stderr``, C extensions writing to stdout/stderr and
Python ``logging`` (root handlers replaced by one plain handler at INFO for the duration)
all land there; afterwards the first :data:`LIMIT` bytes become the invocation's logs, with
a note when more was cut. A pool child runs one invocation at a time, so nothing of another
invocation is mixed in. The file is made once per process and emptied before each use
(making one per invocation cost a tenth of a small function's throughput).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

LIMIT = 64 * 1024
FORMAT = "%(levelname)s %(name)s: %(message)s"


@dataclass
class Captured:
    text: str = ""
    truncated: bool = False


class OutputCapture:
    """One per process: ``with capture() as captured:`` around a handler call."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._sink: IO[bytes] | None = None
        self._pid = 0
        self._dirty = False  # the last invocation left something in the file
        self._read = 0  # how much of this invocation's file :meth:`lines` handed out
        self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter(FORMAT))

    def _file(self) -> IO[bytes]:
        if self._sink is None or self._pid != os.getpid():  # a forked child makes its own
            self._sink = tempfile.TemporaryFile()  # noqa: SIM115  # kept for the process
            self._pid = os.getpid()
            self._dirty = False
        if self._dirty:
            self._sink.seek(0)
            self._sink.truncate()
            self._dirty = False
        return self._sink

    @contextlib.contextmanager
    def __call__(self, captured: Captured | None = None) -> Iterator[Captured]:
        """Capture fds 1 and 2 and ``logging`` for the duration; the result (``captured``,
        or a new one) fills on exit."""
        captured = Captured() if captured is None else captured
        _flush()
        sink = self._file()
        self._read = 0
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        self._handler.setStream(sys.stderr)
        root.handlers = [self._handler]
        root.setLevel(logging.INFO)
        try:
            yield captured
        finally:
            _flush()
            root.handlers = handlers
            root.setLevel(level)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            size = sink.seek(0, os.SEEK_END)
            if size:
                self._dirty = True
                sink.seek(0)
                captured.text = sink.read(self.limit).decode(errors="replace")
                if size > self.limit:
                    captured.truncated = True
                    cut = size - self.limit
                    captured.text += f"\n[... {cut} more bytes not kept: the limit is {self.limit}]"

    def lines(self, *, final: bool = False) -> list[str]:
        """While capturing: the whole lines written since the last call (with ``final``, a
        last unfinished one too), within the first :data:`LIMIT` bytes, as the logs keep."""
        if self._sink is None:
            return []
        _flush()
        fd = self._sink.fileno()
        end = min(os.fstat(fd).st_size, self.limit)
        if end <= self._read:
            return []
        data = os.pread(fd, end - self._read, self._read)
        if not final:
            data = data[: data.rfind(b"\n") + 1]
        self._read += len(data)
        return data.decode(errors="replace").splitlines()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
