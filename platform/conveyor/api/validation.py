"""Checking an invoke request against the version's JSON Schema, without its code.

The whole body is checked at once (``{"input": <the function's input schema>,
"priority"?: 0..9}``, nothing else) by jsonschema-rs, compiled once per version. What JSON
Schema cannot express (a pydantic validator, a custom type) is checked again by the worker
with the real type (:mod:`conveyor.runtime.validation`).
"""

from __future__ import annotations

import itertools
from typing import Any

import jsonschema_rs

from conveyor.errors import ValidationError
from conveyor.functions.loader import FunctionSchemas
from conveyor.functions.registry import FunctionSpec
from conveyor.webhooks.intake import REQUEST_SCHEMA as WEBHOOK_SCHEMA

DEADLINE_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339: not started by then, it ends expired; running then, cancelled"
    " (or the Cancel-After header: 30s, 5m)",
}
PRIORITY_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 9, "description": "9 = most urgent"}
MAX_ERRORS = 20
MAX_MESSAGE = 200
KEPT = 256


def request_schema(
    schemas: FunctionSchemas, *, webhooks: bool, input_ref: str | None = None
) -> dict[str, Any]:
    """The invoke body: the input, an optional priority (and webhook, where webhooks are
    enabled), nothing else."""
    properties = {
        "input": {"$ref": input_ref} if input_ref else schemas.input,
        "priority": PRIORITY_SCHEMA,
    }
    properties["deadline"] = DEADLINE_SCHEMA
    if webhooks:
        properties["webhook"] = WEBHOOK_SCHEMA
    return {
        "type": "object",
        "required": ["input"],
        "additionalProperties": False,
        "properties": properties,
    }


def training_request_schema(schemas: FunctionSchemas, *, webhooks: bool) -> dict[str, Any]:
    """A training's body: its handler's input, ``promote`` (serve the new version at
    once), and a webhook where webhooks are enabled; nothing else."""
    training = dict(schemas.training or {})
    defs = training.pop("$defs", {})
    properties: dict[str, Any] = {
        "input": training,
        "promote": {
            "type": "boolean",
            "description": "serve the new version as soon as it is stored (default: retain it)",
        },
    }
    if webhooks:
        properties["webhook"] = WEBHOOK_SCHEMA
    schema = {
        "type": "object",
        "required": ["input"],
        "additionalProperties": False,
        "properties": properties,
    }
    return {**schema, "$defs": defs} if defs else schema


class RequestValidators:
    """Compiled validators by function version (an old one invoked with ``?version=``
    included), at most :data:`KEPT` of each kind."""

    def __init__(self, *, webhooks: bool) -> None:
        self.webhooks = webhooks
        self._compiled: dict[tuple[str, str], Any] = {}
        self._items: dict[tuple[str, str], Any] = {}
        self._trainings: dict[tuple[str, str], Any] = {}

    def item_errors(
        self, spec: FunctionSpec, schemas: FunctionSchemas, value: Any
    ) -> list[dict[str, str]]:
        """What is wrong with one input (a map job's item): [] when nothing is."""
        validator = self._items.get((spec.name, spec.version))
        if validator is None:
            schema = {**schemas.input, "$defs": schemas.defs}
            validator = _keep(
                self._items, spec, jsonschema_rs.validator_for(schema, validate_formats=True)
            )
        if validator.is_valid(value):
            return []
        return [_describe(e) for e in itertools.islice(validator.iter_errors(value), MAX_ERRORS)]

    def validate(self, spec: FunctionSpec, schemas: FunctionSchemas, body: Any) -> None:
        """Raise :class:`ValidationError` naming every bad field of ``body``."""
        validator = self._compiled.get((spec.name, spec.version))
        if validator is None:
            schema = {**request_schema(schemas, webhooks=self.webhooks), "$defs": schemas.defs}
            validator = _keep(
                self._compiled, spec, jsonschema_rs.validator_for(schema, validate_formats=True)
            )
        _check(validator, body, f"invalid request for {spec.name!r}")

    def validate_training(self, spec: FunctionSpec, schemas: FunctionSchemas, body: Any) -> None:
        """:meth:`validate`, for a training's body (:func:`training_request_schema`)."""
        validator = self._trainings.get((spec.name, spec.version))
        if validator is None:
            schema = training_request_schema(schemas, webhooks=self.webhooks)
            validator = _keep(
                self._trainings, spec, jsonschema_rs.validator_for(schema, validate_formats=True)
            )
        _check(validator, body, f"invalid training request for {spec.name!r}")


def _check(validator: Any, body: Any, what: str) -> None:
    if validator.is_valid(body):
        return
    errors = [_describe(e) for e in itertools.islice(validator.iter_errors(body), MAX_ERRORS)]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    raise ValidationError(f"{what}: {summary}", errors)


def _keep(cache: dict[tuple[str, str], Any], spec: FunctionSpec, validator: Any) -> Any:
    if len(cache) >= KEPT:
        cache.clear()  # versions come and go rarely: starting over is cheap
    cache[(spec.name, spec.version)] = validator
    return validator


def _describe(error: Any) -> dict[str, str]:
    path = [str(part) for part in error.instance_path]
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        path.append(str(kind.property))
        message = "required"
    elif isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        path.append(",".join(str(name) for name in kind.unexpected))
        message = "not allowed here" + (
            '; send {"input": ..., "priority"?: 0-9}' if len(path) == 1 else ""
        )
    else:
        message = str(error.message)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return {"field": ".".join(path) or "body", "message": message, "type": type(kind).__name__}
