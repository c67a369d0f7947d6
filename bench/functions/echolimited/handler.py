from typing import Any


def echo(payload: Any) -> Any:
    return payload
