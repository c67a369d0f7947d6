"""The OpenAPI document at ``/schema``: Litestar's, plus one invoke path per function with
that function's input schema, rebuilt on each request so deploys show up at once."""

from __future__ import annotations

import copy
from typing import Any

from conveyor.functions.registry import Registry

REF_PREFIX = "#/components/schemas/"


def function_paths(registry: Registry, base: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    paths = doc.setdefault("paths", {})
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for entry in registry.entries():
        if entry.loaded is None:
            continue
        prefix = f"{entry.name}."
        schema = entry.loaded.input_adapter.json_schema(
            ref_template=REF_PREFIX + prefix + "{model}"
        )
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas[prefix + def_name] = definition
        schemas[f"{entry.name}.Input"] = schema
        request_schema = {
            "type": "object",
            "required": ["input"],
            "additionalProperties": False,
            "properties": {
                "input": {"$ref": f"{REF_PREFIX}{entry.name}.Input"},
                "priority": {"type": "integer", "minimum": 0, "maximum": 9},
            },
        }
        paths[f"/functions/{entry.name}/invoke"] = {
            "post": {
                "summary": f"Invoke {entry.name}",
                "description": entry.loaded.manifest.function.description,
                "operationId": f"invoke_{entry.name.replace('-', '_')}",
                "tags": ["functions"],
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "number", "minimum": 0, "maximum": 60},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request_schema}},
                },
                "responses": {
                    "200": {"description": "finished within ?wait"},
                    "202": {"description": "accepted: stored and queued"},
                    "413": {"description": "input too large"},
                    "422": {"description": "input does not match the schema"},
                    "503": {"description": "Redis unreachable; retry after Retry-After"},
                },
            }
        }
    return doc
