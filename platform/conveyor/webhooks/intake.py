"""What an invoke request may ask for: ``"webhook": {"url", "events"}``.

The request body's JSON Schema has already checked the shape (:data:`REQUEST_SCHEMA`);
here the URL itself: http(s), no credentials, a host the guard lets through. Anything
refused is a 422 naming ``webhook.url``: a webhook is never accepted and then dropped.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from conveyor.errors import ValidationError
from conveyor.guard import Guard, RefusedAddressError

EVENTS = ("start", "output", "completed")  # output: a streaming function's chunks so far
DEFAULT_EVENTS = ["completed"]
MAX_URL = 2048

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "deliveries of this invocation's events, signed (Standard Webhooks)",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "maxLength": MAX_URL, "pattern": "^[hH][tT][tT][pP][sS]?://"},
        "events": {
            "type": "array",
            "items": {"enum": list(EVENTS)},
            "minItems": 1,
            "uniqueItems": True,
            "description": "start, completed (the default)",
        },
    },
}


def _refused(message: str) -> ValidationError:
    error = {"field": "webhook.url", "message": message}
    return ValidationError(f"invalid request: webhook.url: {message}", [error])


class WebhookIntake:
    """Checks a request's webhook; ``enabled`` when a signing secret is configured."""

    def __init__(self, guard: Guard, *, enabled: bool) -> None:
        self.guard = guard
        self.enabled = enabled

    def require_enabled(self) -> None:
        if not self.enabled:
            error = {"field": "webhook", "message": "webhooks are not enabled here"}
            raise ValidationError(
                "webhooks are not enabled on this deployment: its operator sets"
                " [webhooks] secret (CONVEYOR_WEBHOOKS__SECRET)",
                [error],
            )

    async def accept(self, webhook: dict[str, Any]) -> str:
        """The webhook as stored with the record (JSON), or ValidationError."""
        self.require_enabled()
        url = webhook["url"]
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError as exc:
            raise _refused(f"not a URL: {exc}") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise _refused("give an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise _refused("credentials in the URL are not allowed; use the signature instead")
        try:
            await self.guard.resolve(parts.hostname, port)
        except RefusedAddressError as exc:
            raise _refused(str(exc)) from None
        events = webhook.get("events") or DEFAULT_EVENTS
        return json.dumps({"url": url, "events": events}, separators=(",", ":"))
