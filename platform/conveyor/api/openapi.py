"""The OpenAPI 3.1 document at ``/schema``: every route, every status code it can answer
with its media type, parameters with their real bounds, typed bodies; plus, per function,
an invoke path and a result path typed with that function's own input and output schemas.

It is written here rather than derived from the route handlers so that it says exactly
what the API does (problem details, 202 with Location, 503 with Retry-After); the test
suite holds the two together (schemathesis ``--checks all`` against a running API, and a
unit test comparing this document's operations with the app's routes).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import conveyor
from conveyor.api.operations import (
    BINARY,
    REF,
    delete_op,
    files_param,
    invocation_param,
    invoke_op,
    ref,
    result_op,
    stream_op,
    training_op,
    wait_param,
)
from conveyor.api.paths import paths
from conveyor.api.problems import PROBLEM_JSON
from conveyor.api.schemas import DOCUMENTED
from conveyor.api.validation import PRIORITY_SCHEMA, request_schema, training_request_schema
from conveyor.functions.loader import DEFS_REF, FunctionSchemas
from conveyor.functions.registry import FunctionEntry
from conveyor.handler_types import FILE_MARK
from conveyor.settings import Settings
from conveyor.webhooks.intake import REQUEST_SCHEMA as WEBHOOK_SCHEMA


@dataclass(frozen=True)
class Options:
    """What of the deployment shows in the document."""

    max_wait: float = 60.0
    auth: bool = False  # [api] auth = "keys": a bearer scheme, 401 and 403 everywhere
    webhooks: bool = False  # a signing secret is set: requests may ask for webhooks

    @classmethod
    def of(cls, settings: Settings) -> Options:
        return cls(
            settings.api.max_wait, settings.api.auth == "keys", bool(settings.webhooks.secrets)
        )


def document(entries: list[FunctionEntry], options: Options) -> dict[str, Any]:
    """The whole document: the generic routes plus one invoke and one result path per
    function that has a version to serve (the caller's to filter)."""
    doc = copy.deepcopy(_base(options))
    for entry in entries:
        if entry.spec is not None and entry.schemas is not None:
            description = entry.spec.manifest.function.description
            _add_function(doc, entry.name, description, entry.schemas, options)
    if options.auth:
        _secure(doc)
    return doc


# -- the fixed part ------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _base(options: Options) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["serialization"]]]
    models = [(m, "serialization") for m in DOCUMENTED]
    _, defs = models_json_schema(models, ref_template=REF + "{model}")
    components = _without_null_defaults(defs["$defs"])
    components["MapRequest"] = _map_request(options)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conveyor",
            "version": conveyor.__version__,
            "description": "Invoke functions, read their results. Each deployed function has"
            " its own invoke path, typed with its input and output schemas (the document"
            " follows deploys). Errors are RFC 9457 problem details.",
        },
        "paths": paths(options.max_wait),
        "components": {"schemas": components},
    }


def _map_request(options: Options) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {},
            "description": "the function's inputs (any JSON; GET /functions/{name} gives the"
            " input schema); each is checked on its own and an invalid one fails alone",
        },
        "priority": {"type": "integer", "minimum": 0, "maximum": 9},
    }
    if options.webhooks:
        url = {"url": WEBHOOK_SCHEMA["properties"]["url"]}
        properties["webhook"] = {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": url,
            "description": "where the job's completion is delivered",
        }
    return {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": properties,
        "description": "a map job (or application/x-ndjson: one input per line, ?priority=N)",
    }


def _without_null_defaults(node: Any) -> Any:
    """Drop ``"default": null``: in these bodies an absent field is left out, not null."""
    if isinstance(node, dict):
        return {
            k: _without_null_defaults(v)
            for k, v in node.items()
            if not (k == "default" and v is None)
        }
    if isinstance(node, list):
        return [_without_null_defaults(v) for v in node]
    return node


# -- one function --------------------------------------------------------------------------


def _add_function(
    doc: dict[str, Any], name: str, description: str, schemas: FunctionSchemas, options: Options
) -> None:
    """Components ``<name>.<Model>`` for the function's models, ``<name>.InvokeRequest`` and
    ``<name>.Result``; its invoke path and its typed result path.

    Each component's title is unique in the document (code generators name classes by
    it): a model's own name when it already starts with the function's (``IrisInput``),
    else prefixed with it (``EchoInput``, ``TeamAResult``).
    """
    components = doc["components"]["schemas"]
    titles = {c.get("title") for c in components.values() if isinstance(c, dict)}
    prefix = "".join(part.capitalize() for part in re.split(r"[-_]", name))

    def add(key: str, schema: dict[str, Any]) -> dict[str, str]:
        title = key if key.startswith(prefix) else prefix + key
        while title in titles:
            title = "_" + title
        titles.add(title)
        components[f"{name}.{key}"] = {**schema, "title": title}
        return ref(f"{name}.{key}")

    names = {d: f"{name}.{d}" for d in schemas.defs}
    for def_name, definition in schemas.defs.items():
        add(def_name, _rewrite_refs(definition, names))
    sides = {}
    for side, schema in (("Input", schemas.input), ("Output", schemas.output)):
        target = schema.get("$ref")
        if len(schema) == 1 and isinstance(target, str) and target.startswith(DEFS_REF):
            sides[side] = ref(names[target.removeprefix(DEFS_REF)])  # the model itself
        else:
            sides[side] = add(side, _rewrite_refs(schema, names))
    invoke_request = request_schema(
        schemas, webhooks=options.webhooks, input_ref=sides["Input"]["$ref"]
    )
    add("InvokeRequest", invoke_request)
    max_wait = options.max_wait
    typed = copy.deepcopy(components["Result"])
    typed["properties"]["output"] = sides["Output"]
    typed.pop("description", None)
    add("Result", typed)
    params = [invocation_param(), wait_param(max_wait), files_param()]
    result = result_op(f"get_{name}_result", f"A result of {name}", params, f"{name}.Result")
    # This path shadows the generic one for this function, so it says DELETE too.
    remove = delete_op(f"delete_{name}_result", [invocation_param()])
    result["tags"] = remove["tags"] = [name]
    paths = doc["paths"]
    form = _invoke_form(schemas, sides["Input"])
    paths[f"/functions/{name}/invoke"] = {"post": invoke_op(name, description, max_wait, form)}
    paths[f"/functions/{name}/results/{{invocation_id}}"] = {"get": result, "delete": remove}
    if schemas.training is not None:
        _add_training(doc, name, schemas, options, add)
    if schemas.stream is not None:
        chunk = add("Chunk", _rewrite_refs(schemas.stream, names))
        events = stream_op(f"stream_{name}_events", chunk)
        events["tags"] = [name]
        paths[f"/functions/{name}/results/{{invocation_id}}/stream"] = {"get": events}


def _add_training(
    doc: dict[str, Any],
    name: str,
    schemas: FunctionSchemas,
    options: Options,
    add: Callable[[str, dict[str, Any]], dict[str, str]],
) -> None:
    """``<name>.TrainingRequest`` (its definitions as ``<name>.Training<Model>``) and the
    function's own trainings path."""
    assert schemas.training is not None
    paths, max_wait = doc["paths"], options.max_wait
    training = dict(schemas.training)
    training_defs = training.pop("$defs", {})
    local = {d: f"{name}.Training{d}" for d in training_defs}
    for def_name, definition in training_defs.items():
        add(f"Training{def_name}", _rewrite_refs(definition, local))
    body = training_request_schema(
        replace(schemas, training=_rewrite_refs(training, local)), webhooks=options.webhooks
    )
    add("TrainingRequest", body)
    start = training_op(name, max_wait)
    # This path shadows the generic one for this function, so it lists them too.
    listing = copy.deepcopy(doc["paths"]["/functions/{name}/trainings"]["get"])
    listing.pop("parameters", None)
    listing.update(operationId=f"list_{name}_trainings")
    start["tags"] = listing["tags"] = [name]
    paths[f"/functions/{name}/trainings"] = {"post": start, "get": listing}


INPUT_PART = (
    "the input (JSON; a part that is text but not JSON is that string, and one left out is"
    " null); file fields may be null"
)


def _invoke_form(schemas: FunctionSchemas, input_ref: dict[str, Any]) -> dict[str, Any]:
    """An invoke as ``multipart/form-data``: the input as a JSON part, and a part for each
    of its top-level file fields (one inside a list is named ``field.0``, and so on)."""
    root = schemas.input
    target = root.get("$ref")
    if isinstance(target, str) and target.startswith(DEFS_REF):
        root = schemas.defs.get(target.removeprefix(DEFS_REF), {})
    files = {
        name: {**BINARY, "description": "the file for this field"}
        for name, field in (root.get("properties") or {}).items()
        if FILE_MARK in json.dumps(field) and "$ref" not in json.dumps(field)
    }
    return {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {**input_ref, "description": INPUT_PART},
            "priority": PRIORITY_SCHEMA,
            **files,
        },
        "additionalProperties": False,
        "description": "the input as a part, and one part per file field, named by the field",
    }


def _secure(doc: dict[str, Any]) -> None:
    """Every operation but health's needs a key: say so, and what the refusals look like."""
    doc["components"]["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key (cvk_...) from `conveyor keys create`",
        }
    }
    doc["security"] = [{"apiKey": []}]
    challenge = {
        "description": 'Bearer realm="conveyor", with error="invalid_token" or'
        ' error="insufficient_scope"',
        "schema": {"type": "string"},
        "required": True,
    }
    for item in doc["paths"].values():
        for operation in item.values():
            if operation["tags"] == ["health"]:
                operation["security"] = []
                continue
            for code, why in (
                (401, "No API key, or an unknown or revoked one"),
                (403, "The key is valid, but its scopes do not allow this"),
            ):
                operation["responses"][str(code)] = {
                    "description": why,
                    "headers": {"WWW-Authenticate": challenge},
                    "content": {PROBLEM_JSON: {"schema": ref("Problem")}},
                }


def _rewrite_refs(node: Any, names: dict[str, str]) -> Any:
    """``#/$defs/X`` (as pydantic writes it) to ``#/components/schemas/<function>.X``."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(DEFS_REF):
                out[key] = REF + names.get(value.removeprefix(DEFS_REF), value)
            else:
                out[key] = _rewrite_refs(value, names)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, names) for v in node]
    return node
