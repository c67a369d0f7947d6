"""What a handler prints or logs while it runs, kept for that invocation.

During ``predict`` (or ``predict_batch``) the process's file descriptors 1 and 2 point at a
temporary file, so ``print``, ``sys.stderr``, C extensions writing to stdout/stderr and
Python ``logging`` (root handlers replaced by one plain handler at INFO for the duration)
all land there; afterwards the first :data:`LIMIT` bytes become the invocation's logs, with
a note when more was cut. A pool child runs one invocation at a time, so nothing of another
invocation is mixed in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

LIMIT = 64 * 1024
FORMAT = "%(levelname)s %(name)s: %(message)s"


@dataclass
class Captured:
    text: str = ""
    truncated: bool = False


@contextlib.contextmanager
def capture_output(limit: int = LIMIT) -> Iterator[Captured]:
    """Capture fds 1 and 2 and ``logging`` for the duration; the result fills on exit."""
    captured = Captured()
    _flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.handlers = [handler]
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
            sink.seek(0)
            data = sink.read(limit)
            captured.text = data.decode(errors="replace")
            if size > limit:
                captured.truncated = True
                captured.text += f"\n[... {size - limit} more bytes not kept: the limit is {limit}]"


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
