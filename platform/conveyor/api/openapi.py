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
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import conveyor
from conveyor.api.problems import PROBLEM_JSON
from conveyor.api.schemas import DOCUMENTED
from conveyor.api.validation import PRIORITY_SCHEMA, request_schema
from conveyor.functions.loader import DEFS_REF, FunctionSchemas
from conveyor.functions.manifest import NAME_PATTERN
from conveyor.functions.registry import FunctionEntry
from conveyor.handler_types import FILE_MARK
from conveyor.maps.db import RECENT_JOBS
from conveyor.settings import Settings
from conveyor.webhooks.intake import REQUEST_SCHEMA as WEBHOOK_SCHEMA

REF = "#/components/schemas/"
# A deploy's body: a zip, sent as such or as plain bytes (curl --data-binary); neither is a
# media type a web page can send cross-site without the browser asking first.
BUNDLE_MEDIA = ("application/zip", "application/octet-stream")
# Visible ASCII, inner spaces allowed: HTTP strips a value's outer whitespace.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"
VERSION_PATTERN = r"^[0-9a-f]{12}$"  # a version digest (functions/digest.py)

_PROBLEMS = {
    400: "Malformed request: the body is not JSON (or, deploying, not a zip of a function"
    " folder), or a parameter is out of range",
    404: "No such function, or no such invocation or retained version of it",
    409: "Conflicts with the invocation's state, or the Idempotency-Key was used for another body",
    413: "The body is larger than the function's [limits] max_input_bytes (deploying: than"
    " [store] max_bundle_bytes)",
    415: "The body is not application/json (deploying: application/zip)",
    422: "The body does not match the schema (`errors` names each bad field), or a deployed"
    " folder's manifest or code is invalid",
    503: "Redis is unreachable, its replicas did not confirm the submit in time ([redis]"
    " min_replicas), or the function has no version ready yet; retry after Retry-After",
}


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


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


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
        "paths": _paths(options.max_wait),
        "components": {"schemas": components},
    }


def _paths(max_wait: float) -> dict[str, Any]:
    name = _param("name", "path", {"type": "string", "pattern": NAME_PATTERN})
    invocation, wait = _invocation_param(), _wait_param(max_wait)
    job = _param("job_id", "path", {"type": "string", "format": "uuid"})
    return {
        "/functions": {"get": _op("list_functions", "List functions", ok=ref("FunctionList"))},
        "/functions/{name}": {
            "get": _op(
                "describe_function",
                "Describe a function, with its input and output schemas",
                ok=ref("FunctionDetail"),
                params=[name],
                problems=[404],
            ),
            "put": _deploy_op(name),
            "delete": _op(
                "remove_function",
                "Remove a function (admin); its queued work still runs",
                params=[name],
                problems=[404, 503],
                status=204,
                tags=["versions"],
            ),
        },
        "/functions/{name}/versions": {
            "get": _op(
                "list_versions",
                "A function's retained versions, most recently deployed first",
                ok=ref("VersionList"),
                params=[name],
                problems=[404, 503],
                tags=["versions"],
            )
        },
        "/functions/{name}/rollback": {"post": _rollback_op(name)},
        "/functions/{name}/deployments/{deployment_id}": {
            "get": _op(
                "get_deployment",
                "How a deployment (PUT /functions/{name}) went (admin)",
                ok=ref("DeploymentStatus"),
                params=[
                    name,
                    _param("deployment_id", "path", {"type": "string", "format": "uuid"}),
                ],
                problems=[404, 503],
                tags=["versions"],
            )
        },
        "/functions/{name}/unpin": {
            "post": _op(
                "unpin",
                "Serve the latest deploy again (admin)",
                ok=ref("VersionList"),
                params=[name],
                problems=[404, 503],
                tags=["versions"],
            )
        },
        "/functions/{name}/results/{invocation_id}": {
            "get": _result_op(
                "get_result",
                "An invocation's result",
                [name, invocation, wait, _files_param()],
                "Result",
            ),
            "delete": _delete_op("delete_result", [name, invocation]),
        },
        "/functions/{name}/results/{invocation_id}/cancel": {
            "post": _op(
                "cancel",
                "Cancel a queued or running invocation (a running attempt is killed)",
                ok=ref("Result"),
                params=[name, invocation],
                problems=[404, 409, 503],
            )
        },
        "/functions/{name}/results/{invocation_id}/logs": {
            "get": _op(
                "get_logs",
                "What an invocation's last attempt printed or logged",
                ok=ref("InvocationLogs"),
                params=[name, invocation],
                problems=[404, 503],
            )
        },
        "/functions/{name}/map": {"post": _map_op(name)},
        "/functions/{name}/jobs": {
            "get": _op(
                "list_jobs",
                "A function's recent map jobs",
                ok=ref("MapJobList"),
                params=[
                    name,
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": RECENT_JOBS, "default": 20},
                        "how many, newest first",
                    ),
                ],
                problems=[400, 404, 503],
                tags=["jobs"],
            )
        },
        "/functions/{name}/jobs/{job_id}": {
            "get": _op(
                "get_job",
                "A map job: status, counts, progress (?wait: until it changes)",
                ok=ref("MapJobInfo"),
                params=[name, job, wait],
                problems=[400, 404, 503],
                tags=["jobs"],
            )
        },
        "/functions/{name}/jobs/{job_id}/results": {
            "get": {
                **_op(
                    "get_job_results",
                    "A map job's results as NDJSON, as they come",
                    params=[
                        name,
                        job,
                        _param(
                            "order", "query", {"type": "string", "enum": ["index", "completion"]}
                        ),
                        _param(
                            "from",
                            "query",
                            {"type": "integer", "minimum": 0},
                            "resume after N lines",
                        ),
                    ],
                    problems=[400, 404, 503],
                    tags=["jobs"],
                ),
                "responses": {
                    "200": {
                        "description": 'one line per item: {"index", "status", "output"|"error",'
                        ' "attempts", "duration_ms"?}',
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    },
                    **{str(c): _problem(c) for c in (400, 404, 503)},
                },
            }
        },
        "/functions/{name}/jobs/{job_id}/cancel": {
            "post": _op(
                "cancel_job",
                "Cancel a map job: no item starts after the answer",
                ok=ref("MapJobInfo"),
                params=[name, job],
                problems=[404, 409, 503],
                tags=["jobs"],
            )
        },
        "/metrics": {
            "get": {
                **_op(
                    "metrics", "Prometheus metrics (admin)", problems=[503], tags=["observability"]
                ),
                "responses": {
                    "200": {
                        "description": "the text exposition format, version 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "503": _problem(503),
                },
            }
        },
        "/queues": {
            "get": _op(
                "queues",
                "Each queue's depth and live workers (admin): what an autoscaler scales on",
                ok=ref("QueueList"),
                problems=[503],
                tags=["observability"],
            )
        },
        "/dashboard/data": {
            "get": _op(
                "dashboard_data",
                "What the dashboard at /dashboard shows",
                ok=ref("DashboardData"),
                params=[
                    _param(
                        "minutes",
                        "query",
                        {"type": "number", "minimum": 1, "maximum": 30},
                        "how far back the charts go",
                    )
                ],
                problems=[400, 503],
                tags=["observability"],
            )
        },
        "/files": {"post": _upload_op()},
        "/files/{file_id}": {
            "get": _read_file_op(),
            "delete": _op(
                "delete_file",
                "Delete a file",
                params=[_file_param()],
                problems=[404, 503],
                status=204,
                tags=["files"],
            ),
        },
        "/healthz": {"get": _op("healthz", "Liveness", ok=ref("Health"), tags=["health"])},
        "/readyz": {
            "get": {
                **_op(
                    "readyz",
                    "Readiness: Redis reachable, functions loaded",
                    ok=ref("Readiness"),
                    tags=["health"],
                ),
                "responses": {
                    "200": _json("ready", ref("Readiness")),
                    "503": _json("not ready", ref("Readiness")),
                },
            }
        },
    }


def _deploy_op(name: dict[str, Any]) -> dict[str, Any]:
    op = _op(
        "deploy_function",
        "Deploy a function folder (admin): validated as a dropped folder, stored, serving",
        ok=ref("Deployment"),
        params=[name],
        problems=[400, 413, 415, 422, 503],
        tags=["versions"],
    )
    op["description"] = (
        "The body is a zip archive of the folder's files (function.toml at its top), as"
        " `conveyor deploy PATH` sends it. It is taken (202) once read: unpacking,"
        " inspecting and storing it go on, and its status URL says how that ends. With"
        " `Prefer: wait=<seconds>` the outcome itself answers when it comes in time: 201 for"
        " a new function, 200 for a new version, or the folder's problem (422, 400)."
    )
    op["requestBody"] = {
        "required": True,
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}} for media in BUNDLE_MEDIA
        },
    }
    op["responses"]["200"]["description"] = "a new version of the function serves"
    op["responses"]["202"] = {
        **_json(
            "taken: the deployment goes on; its status URL says how it ends",
            ref("DeploymentAccepted"),
        ),
        "headers": {"Location": {"description": "its status", "schema": {"type": "string"}}},
    }
    op["responses"]["201"] = {
        **_json("the function is new, and serves", ref("Deployment")),
        "headers": {"Location": {"description": "the function", "schema": {"type": "string"}}},
    }
    return op


def _rollback_op(name: dict[str, Any]) -> dict[str, Any]:
    op = _op(
        "rollback",
        "Serve a retained version until unpinned or redeployed (admin)",
        ok=ref("VersionList"),
        params=[name],
        problems=[400, 404, 413, 415, 422, 503],
        tags=["versions"],
    )
    op["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": ref("RollbackRequest")}},
    }
    return op


def _invoke_op(
    name: str, description: str, max_wait: float, form: dict[str, Any]
) -> dict[str, Any]:
    wait = _wait_param(
        max_wait, "answer 200 with the result if it finishes within this many seconds"
    )
    version = _param(
        "version",
        "query",
        {"type": "string", "pattern": VERSION_PATTERN},
        "run this retained version instead of the one that serves (GET"
        f" /functions/{name}/versions lists them); the body is checked against its schema",
    )
    key = _param(
        "Idempotency-Key",
        "header",
        {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
        "retrying with the same key and body returns the first invocation; keys are per function",
    )
    op = _op(
        f"invoke_{name}",
        f"Invoke {name}",
        ok=ref(f"{name}.Result"),
        params=[wait, version, key],
        problems=[400, 404, 409, 413, 415, 422, 503],
        tags=[name],
    )
    op["description"] = description
    op["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": ref(f"{name}.InvokeRequest")},
            "multipart/form-data": {
                "schema": form,
                "encoding": {"input": {"contentType": "application/json"}},
            },
        },
    }
    op["responses"]["200"]["description"] = "finished within ?wait"
    by_id = {"name": "$response.body#/function", "invocation_id": "$response.body#/id"}
    op["responses"]["202"] = {
        **_json(
            "accepted: stored in Redis and queued; it will run or fail visibly", ref("Accepted")
        ),
        "headers": {"Location": {"description": "the result's URL", "schema": {"type": "string"}}},
        "links": {  # what a client can do next with the invocation
            "GetResult": {
                "operationId": f"get_{name}_result",
                "parameters": {"invocation_id": "$response.body#/id"},
            },
            "Cancel": {"operationId": "cancel", "parameters": by_id},
            "Delete": {"operationId": "delete_result", "parameters": by_id},
        },
    }
    return op


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


def _map_op(name: dict[str, Any]) -> dict[str, Any]:
    key = _param(
        "Idempotency-Key",
        "header",
        {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
        "retrying an upload with the same key and body returns the first job",
    )
    priority = _param("priority", "query", {"type": "integer", "minimum": 0, "maximum": 9})
    op = _op(
        "map",
        "Map a function over many inputs (streamed; each item checked on its own)",
        params=[name, priority, key],
        problems=[400, 404, 409, 413, 415, 422, 503],
        status=202,
        tags=["jobs"],
    )
    op["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": ref("MapRequest")}},
    }
    op["responses"]["202"] = {
        **_json("accepted: every item is stored; the job runs", ref("MapJobInfo")),
        "headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}},
    }
    return op


def _file_param() -> dict[str, Any]:
    return _param("file_id", "path", {"type": "string", "pattern": "^[0-9a-f]{32}$"})


BINARY = {"type": "string", "format": "binary"}
OCTETS = "application/octet-stream"  # a file of any type: the header says which


def _upload_op() -> dict[str, Any]:
    filename = _param("filename", "query", {"type": "string"}, "the file's name, kept with it")
    op = _op(
        "upload_file",
        "Upload a file (the raw body, any type): an input field may then hold its url",
        ok=ref("FileInfo"),
        params=[filename],
        problems=[400, 413, 503],
        status=201,
        tags=["files"],
    )
    op["requestBody"] = {
        "required": True,
        "description": "the file's bytes, sent with its own Content-Type (any)",
        "content": {OCTETS: {"schema": BINARY}},
    }
    return op


def _read_file_op() -> dict[str, Any]:
    ranges = _param("Range", "header", {"type": "string"}, "one range: bytes=0-1023")
    op = _op(
        "read_file",
        "Read a file (its bytes, with its type, ETag and name)",
        params=[_file_param(), ranges],
        problems=[400, 404, 503],
        tags=["files"],
    )
    binary = {"content": {OCTETS: {"schema": BINARY}}}
    op["responses"]["200"] = {"description": "the file", **binary}
    op["responses"]["206"] = {"description": "the range asked for", **binary}
    op["responses"]["416"] = {"description": "the range is outside the file"}
    return op


def _files_param() -> dict[str, Any]:
    return _param(
        "files",
        "query",
        {"type": "string", "enum": ["url", "data_uri"]},
        "output files as URLs (the default), or inline as data URIs up to 256 KiB",
    )


def _delete_op(op_id: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    summary = "Delete a finished invocation's record and output (409 if unfinished: cancel it)"
    return _op(op_id, summary, params=params, problems=[404, 409, 503], status=204)


def _result_op(
    op_id: str, summary: str, params: list[dict[str, Any]], result: str
) -> dict[str, Any]:
    return _op(op_id, summary, ok=ref(result), params=params, problems=[400, 404, 503])


def _invocation_param() -> dict[str, Any]:
    return _param("invocation_id", "path", {"type": "string", "format": "uuid"})


def _wait_param(
    max_wait: float, description: str = "seconds to wait for it to finish"
) -> dict[str, Any]:
    return _param(
        "wait", "query", {"type": "number", "minimum": 0, "maximum": max_wait}, description
    )


def _op(
    op_id: str,
    summary: str,
    *,
    ok: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    problems: tuple[int, ...] | list[int] = (),
    status: int = 200,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if status == 204:
        responses["204"] = {"description": "done"}
    else:
        responses[str(status)] = _json("success", ok or {})
    for code in problems:
        responses[str(code)] = _problem(code)
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": tags or ["functions"],
        "responses": responses,
    }
    if params:
        op["parameters"] = params
    return op


def _problem(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _PROBLEMS[code],
        "content": {PROBLEM_JSON: {"schema": ref("Problem")}},
    }
    if code == 503:
        response["headers"] = {
            "Retry-After": {
                "description": "seconds",
                "schema": {"type": "integer"},
                "required": True,
            }
        }
    return response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, where: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    param = {"name": name, "in": where, "required": where == "path", "schema": schema}
    if description:
        param["description"] = description
    return param


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
    params = [_invocation_param(), _wait_param(max_wait), _files_param()]
    result = _result_op(f"get_{name}_result", f"A result of {name}", params, f"{name}.Result")
    # This path shadows the generic one for this function, so it says DELETE too.
    remove = _delete_op(f"delete_{name}_result", [_invocation_param()])
    result["tags"] = remove["tags"] = [name]
    paths = doc["paths"]
    form = _invoke_form(schemas, sides["Input"])
    paths[f"/functions/{name}/invoke"] = {"post": _invoke_op(name, description, max_wait, form)}
    paths[f"/functions/{name}/results/{{invocation_id}}"] = {"get": result, "delete": remove}


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
            "input": {**input_ref, "description": "the input (JSON); file fields may be null"},
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
