"""JSON in results: outputs and errors, never pickle."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

from conveyor.errors import OutputNotSerializableError

MAX_TRACEBACK = 4000


def encode_output(output: Any) -> str:
    """The handler's return value as a JSON document (pydantic models are dumped).

    pydantic-core writes it (a 384-float embedding in 13 µs, against 117 µs through
    ``json.dumps``); a text that may hold a NaN or an infinity, which JSON has no words
    for, is written again by ``json.dumps`` so that a real one is refused."""
    try:
        text = to_json(output, inf_nan_mode="constants").decode()
        if "NaN" in text or "Infinity" in text:
            return json.dumps(to_jsonable_python(output), allow_nan=False, separators=(",", ":"))
        return text
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise OutputNotSerializableError(
            f"the handler returned a {type(output).__name__}, which is not JSON-serialisable:"
            f" {exc}; return dicts, lists, strings, numbers or pydantic models"
        ) from None


def error_payload(
    exc: BaseException, *, with_traceback: bool = True, folder: Path | None = None
) -> dict[str, str]:
    """An error as a result shows it. Its traceback (:func:`user_traceback`) shows the
    function's own frames only: the worker's paths and its libraries are not the caller's
    business (the worker's log keeps the whole one)."""
    # billiard's exceptions (SoftTimeLimitExceeded, ...) print as their repr
    message = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    payload = {"type": type(exc).__name__, "message": message or type(exc).__name__}
    if with_traceback and exc.__traceback__ is not None:
        payload["traceback"] = user_traceback(exc, folder)[-MAX_TRACEBACK:]
    return payload


def user_traceback(exc: BaseException, folder: Path | None) -> str:
    """``exc``'s traceback with each frame inside ``folder`` shown by its path from the
    folder's name (``iris/handler.py``) and every other frame (the platform's, a library's)
    counted, not shown; chained exceptions likewise."""
    lines: list[str] = []
    _format(traceback.TracebackException.from_exception(exc), folder, lines)
    return "".join(lines)


def _format(te: traceback.TracebackException, folder: Path | None, lines: list[str]) -> None:
    if te.__cause__ is not None:
        _format(te.__cause__, folder, lines)
        lines.append(f"\n{_CAUSE}\n\n")
    elif te.__context__ is not None and not te.__suppress_context__:
        _format(te.__context__, folder, lines)
        lines.append(f"\n{_CONTEXT}\n\n")
    if te.stack:
        lines.append("Traceback (most recent call last):\n")
    hidden = 0
    for frame in te.stack:
        shown = _inside(frame.filename, folder)
        if shown is None:
            hidden += 1
            continue
        if hidden:
            lines.append(_elided(hidden))
            hidden = 0
        lines.append(f'  File "{shown}", line {frame.lineno}, in {frame.name}\n')
        if frame.line:
            lines.append(f"    {frame.line.strip()}\n")
    if hidden:
        lines.append(_elided(hidden))
    lines.extend(te.format_exception_only())


_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


def _inside(filename: str, folder: Path | None) -> str | None:
    if folder is None:
        return None
    path = Path(filename)
    return str(path.relative_to(folder.parent)) if path.is_relative_to(folder) else None


def _elided(count: int) -> str:
    return f"  [{count} frame{'s' if count > 1 else ''} of the platform or libraries]\n"
