"""Conveyor: drop a function folder in, call it over HTTP, run it on Celery workers."""

from __future__ import annotations

__version__ = "0.1.0"
