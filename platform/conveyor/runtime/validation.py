"""Input validation in the worker, with the handler's real type.

The API has already checked the input against the version's JSON Schema; this second check
is what JSON Schema cannot express (a pydantic validator, a custom type), and it converts
the input into the handler's type. A failure fails the invocation as ``ValidationError``.
"""

from __future__ import annotations

from typing import Any

import pydantic

from conveyor.errors import TooDeepError, ValidationError
from conveyor.functions.loader import LoadedFunction
from conveyor.nesting import DEFAULT_DEPTH, check_value


def validate_input(fn: LoadedFunction, raw: Any, max_depth: int = DEFAULT_DEPTH) -> Any:
    """Return ``raw`` converted to the handler's input type, or raise naming each field.
    Its nesting is checked first (``[api] max_json_depth``): pydantic recurses per level."""
    try:
        check_value(raw, max_depth)
    except TooDeepError as exc:
        error = {"field": "input", "message": str(exc), "type": "too_deep"}
        raise ValidationError(f"invalid input for {fn.name!r}: {exc}", [error]) from None
    try:
        return fn.input_adapter.validate_python(raw)
    except pydantic.ValidationError as exc:
        errors = [
            {
                "field": ".".join(["input", *(str(p) for p in err["loc"])]),
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise ValidationError(f"invalid input for {fn.name!r}: {summary}", errors) from None
