"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Each delivery carries ``webhook-id`` (the same on every retry), ``webhook-timestamp`` (Unix
seconds, of this attempt) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">``, one per configured secret, space-separated, so receivers
keep verifying while secrets rotate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from conveyor.settings import WEBHOOK_SECRET_PREFIX

SECRET_BYTES = 32


def new_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))


def signature(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,...`` per secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets_
    )


def headers(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets_, msg_id, timestamp, body),
        "content-type": "application/json",
    }
