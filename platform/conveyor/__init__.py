"""Conveyor: drop a function folder in, call it over HTTP, run it on Celery workers."""

from __future__ import annotations

from conveyor.handler_types import Accept, File, TextStream

__all__ = ["Accept", "File", "TextStream"]
__version__ = "0.1.0"
