"""Deadlines a request brings: its ``Cancel-After`` header (``30``, ``30s``, ``5m``,
``1h``) or its body's ``deadline`` (RFC 3339), as a time (``api/limits.py`` ends what is
past it)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from litestar import Request

from conveyor.api.operations import DURATION_PATTERN
from conveyor.errors import ValidationError

_DURATION = re.compile(DURATION_PATTERN)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``30``, ``30s``, ``5m``, ``1.5h`` in seconds (ValueError: what it may be)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write seconds (30, 30s), minutes (5m) or hours (1h)"
        )
    return float(match.group(1)) * _UNIT[match.group(2) or "s"]


def request_deadline(request: Request[Any, Any, Any], body: Any) -> float | None:
    """When the request gives up: now plus its ``Cancel-After`` header, or its body's
    ``deadline`` (RFC 3339); the earlier of both. One already passed is taken as given:
    the invocation expires at once. A 422 names what is malformed."""
    found = []
    header = request.headers.get("cancel-after")
    if header is not None:
        try:
            seconds = parse_duration(header)
        except ValueError as exc:
            raise _invalid("Cancel-After", str(exc)) from None
        found.append(time.time() + seconds)
    given = body.get("deadline") if isinstance(body, dict) else None
    if given is not None:
        try:
            when = datetime.fromisoformat(str(given))
        except ValueError:
            raise _invalid("deadline", f"{given!r} is not an RFC 3339 date-time") from None
        found.append(when.timestamp())
    return min(found) if found else None


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(
        f"{field}: {message}", [{"field": field, "message": message, "type": "Deadline"}]
    )
