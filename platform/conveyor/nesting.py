"""JSON nesting, bounded before anything recursive sees it.

Python's parser, pydantic and jsonschema-rs all recurse once per level of nesting: a body
30,000 levels deep overflows the native stack of the last (the process dies) and raises
``RecursionError`` in the others. Every JSON the platform takes from outside is held to
``[api] max_json_depth`` levels first: :func:`check_text` on the raw bytes (before parsing),
:func:`check_value` on a value already parsed by something that does not recurse (ijson's
events, a Celery message).
"""

from __future__ import annotations

import re
from typing import Any

from conveyor.errors import TooDeepError

DEFAULT_DEPTH = 64  # [api] max_json_depth's default; a manifest's limit

# A JSON string, escapes included (possessive: linear whatever the input).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")  # one pass removes exactly one level


def too_deep(limit: int, where: str = "the body") -> TooDeepError:
    return TooDeepError(
        f"{where} nests JSON more than {limit} levels deep ([api] max_json_depth);"
        " flatten it, or ask the operator to raise the limit"
    )


def check_text(text: bytes | bytearray, limit: int, where: str = "the body") -> None:
    """Raise :class:`TooDeepError` if the JSON ``text`` nests deeper than ``limit``.

    Linear in the text: fewer opening brackets than the limit cannot nest past it (the
    common case, one count); otherwise strings are cut out, everything but brackets dropped
    and innermost pairs removed a level per pass, at most ``limit`` passes. Unbalanced text
    (not JSON) is refused as too deep when it might be, else left for the parser.
    """
    if text.count(b"[") + text.count(b"{") <= limit:
        return
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    for passes in range(limit + 1):
        if not brackets:
            return
        if passes == limit:
            raise too_deep(limit, where)
        inner = _INNERMOST.sub(b"", brackets)
        if len(inner) == len(brackets):  # unbalanced, so not JSON: deep if it may be
            if passes + brackets.count(b"[") + brackets.count(b"{") > limit:
                raise too_deep(limit, where)
            return
        brackets = inner


def check_value(value: Any, limit: int, where: str = "the input") -> None:
    """Raise :class:`TooDeepError` if ``value`` (lists and dicts) nests deeper than
    ``limit``; iterative, so it cannot itself run out of stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            raise too_deep(limit, where)
        stack.extend((child, depth + 1) for child in children if isinstance(child, list | dict))
