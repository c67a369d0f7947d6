"""A plain function handler: any JSON in, the same JSON out."""

from typing import Any


def echo(payload: Any) -> Any:
    return payload
