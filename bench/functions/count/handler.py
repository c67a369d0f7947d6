from typing import Any


def count(items: list[Any]) -> int:
    return len(items)
