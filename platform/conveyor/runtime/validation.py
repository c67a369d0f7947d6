"""Input validation against a handler's annotation, shared by the API and the workers."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from conveyor.errors import InputValidationError
from conveyor.functions.loader import LoadedFunction


def validate_input(fn: LoadedFunction, raw: Any) -> Any:
    """Return ``raw`` converted to the handler's input type, or raise naming each field."""
    try:
        return fn.input_adapter.validate_python(raw)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(["input", *(str(p) for p in err["loc"])]),
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InputValidationError(f"invalid input for {fn.name!r}: {summary}", errors) from None
