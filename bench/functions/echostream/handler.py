from collections.abc import Iterator
from typing import Any


def echo(payload: Any) -> Iterator[Any]:
    yield payload
