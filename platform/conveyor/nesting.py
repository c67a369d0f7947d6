"""JSON taken from outside: its nesting bounded before anything recursive sees it, and
nothing in it that a reader downstream cannot take.

Python's parser, pydantic and jsonschema-rs all recurse once per level of nesting: a body
30,000 levels deep overflows the native stack of the last (the process dies) and raises
``RecursionError`` in the others. Every JSON the platform takes from outside is held to
``[api] max_json_depth`` levels first: :func:`check_text` on the raw bytes (before parsing),
:func:`check_value` on a value already parsed by something that does not recurse (ijson's
events, a Celery message).

Python's parser also takes what no other reader does: a string with an unpaired UTF-16
surrogate (``"\\ud800"``), which Redis' cjson refuses mid-script and UTF-8 cannot encode,
and a number past a double's range (``1e400`` becomes ``inf``, written back as
``Infinity``, which is no JSON). :func:`check_portable` refuses both, naming the field.
"""

from __future__ import annotations

import math
import re
from typing import Any

from conveyor.errors import TooDeepError, ValidationError

DEFAULT_DEPTH = 64  # [api] max_json_depth's default; a manifest's limit

# A JSON string, escapes included (possessive: linear whatever the input).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")  # one pass removes exactly one level
# What may hold an unpaired surrogate's escape or a number past a double: only a text
# this finds is walked (the common input costs one scan in C).
_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]|[eE][+-]?0*[1-9][0-9]{2}|[0-9]{300}|NaN|Infinity")


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


def check_portable(value: Any, where: str = "input", text: bytes | bytearray | None = None) -> None:
    """Raise :class:`ValidationError` naming the first field of ``value`` that holds a
    string with an unpaired surrogate or a number that is not finite (see the module's
    doc). ``text``: the JSON ``value`` was parsed from, if at hand: only a suspect one is
    walked. Iterative, like :func:`check_value`."""
    if text is not None and not _SUSPECT.search(text):
        return
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not _encodes(key):
                    raise _not_portable(_at(path, ascii(key)), "a key with an unpaired surrogate")
                stack.append((child, _at(path, key)))
        elif isinstance(item, list):
            stack.extend((child, _at(path, str(i))) for i, child in enumerate(item))
        elif isinstance(item, str) and not _encodes(item):
            raise _not_portable(path or "body", "a string with an unpaired UTF-16 surrogate")
        elif isinstance(item, float) and not math.isfinite(item):
            raise _not_portable(path or "body", "a number past the range of a double")


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_portable(field: str, what: str) -> ValidationError:
    message = f"{what}: send valid Unicode text and finite numbers"
    return ValidationError(
        f"{field}: {message}", [{"field": field, "message": message, "type": "json"}]
    )
