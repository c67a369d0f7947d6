"""The parts of the OpenAPI document (:mod:`conveyor.api.openapi`): operations, their
parameters, bodies and problem responses, and the patterns the API holds values to."""

from __future__ import annotations

from typing import Any

from conveyor.api.problems import PROBLEM_JSON

REF = "#/components/schemas/"
# A deploy's body: a zip, sent as such or as plain bytes (curl --data-binary); neither is a
# media type a web page can send cross-site without the browser asking first.
BUNDLE_MEDIA = ("application/zip", "application/octet-stream")
# Visible ASCII, inner spaces allowed: HTTP strips a value's outer whitespace.
DURATION_PATTERN = r"^(\d{1,9}(?:\.\d{1,6})?)(s|m|h)?$"  # Cancel-After (api/deadlines.py)
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"
VERSION_PATTERN = r"^[0-9a-f]{12}$"  # a version digest (functions/digest.py)

PROBLEMS = {
    400: "Malformed request: the body is not JSON (or, deploying, not a zip of a function"
    " folder), or a parameter is out of range",
    404: "No such function, or no such invocation or retained version of it",
    409: "Conflicts with the invocation's state, or the Idempotency-Key was used for another body",
    413: "The body is larger than the function's [limits] max_input_bytes (deploying: than"
    " [store] max_bundle_bytes)",
    415: "The body is not application/json (deploying: application/zip)",
    422: "The body does not match the schema (`errors` names each bad field), or a deployed"
    " folder's manifest or code is invalid",
    429: "The function's [limits] max_queued invocations are waiting to start; retry after"
    " Retry-After",
    503: "Redis is unreachable, its replicas did not confirm the submit in time ([redis]"
    " min_replicas), or the function has no version ready yet; retry after Retry-After",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def deploy_op(name: dict[str, Any]) -> dict[str, Any]:
    op = operation(
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
        **json_body(
            "taken: the deployment goes on; its status URL says how it ends",
            ref("DeploymentAccepted"),
        ),
        "headers": {"Location": {"description": "its status", "schema": {"type": "string"}}},
    }
    op["responses"]["201"] = {
        **json_body("the function is new, and serves", ref("Deployment")),
        "headers": {"Location": {"description": "the function", "schema": {"type": "string"}}},
    }
    return op


def rollback_op(name: dict[str, Any]) -> dict[str, Any]:
    op = operation(
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


def invoke_op(name: str, description: str, max_wait: float, form: dict[str, Any]) -> dict[str, Any]:
    wait = wait_param(
        max_wait, "answer 200 with the result if it finishes within this many seconds"
    )
    version = parameter(
        "version",
        "query",
        {"type": "string", "pattern": VERSION_PATTERN},
        "run this retained version instead of the one that serves (GET"
        f" /functions/{name}/versions lists them); the body is checked against its schema",
    )
    key = idempotency_param(
        "retrying with the same key and body returns the first invocation; keys are per function"
    )
    cancel_after = cancel_after_param()
    op = operation(
        f"invoke_{name}",
        f"Invoke {name}",
        ok=ref(f"{name}.Result"),
        params=[wait, version, key, cancel_after],
        problems=[400, 404, 409, 413, 415, 422, 429, 503],
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
        **json_body(
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


def map_op(name: dict[str, Any]) -> dict[str, Any]:
    key = idempotency_param("retrying an upload with the same key and body returns the first job")
    priority = parameter("priority", "query", {"type": "integer", "minimum": 0, "maximum": 9})
    op = operation(
        "map",
        "Map a function over many inputs (streamed; each item checked on its own)",
        params=[name, priority, key, cancel_after_param()],
        problems=[400, 404, 409, 413, 415, 422, 503],
        status=202,
        tags=["jobs"],
    )
    op["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": ref("MapRequest")}},
    }
    op["responses"]["202"] = {
        **json_body("accepted: every item is stored; the job runs", ref("MapJobInfo")),
        "headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}},
    }
    return op


def file_param() -> dict[str, Any]:
    return parameter("file_id", "path", {"type": "string", "pattern": "^[0-9a-f]{32}$"})


BINARY = {"type": "string", "format": "binary"}
OCTETS = "application/octet-stream"  # a file of any type: the header says which


def upload_op() -> dict[str, Any]:
    filename = parameter("filename", "query", {"type": "string"}, "the file's name, kept with it")
    op = operation(
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


def read_file_op() -> dict[str, Any]:
    ranges = parameter("Range", "header", {"type": "string"}, "one range: bytes=0-1023")
    op = operation(
        "read_file",
        "Read a file (its bytes, with its type, ETag and name)",
        params=[file_param(), ranges],
        problems=[400, 404, 503],
        tags=["files"],
    )
    binary = {"content": {OCTETS: {"schema": BINARY}}}
    op["responses"]["200"] = {"description": "the file", **binary}
    op["responses"]["206"] = {"description": "the range asked for", **binary}
    op["responses"]["416"] = {"description": "the range is outside the file"}
    return op


def files_param() -> dict[str, Any]:
    return parameter(
        "files",
        "query",
        {"type": "string", "enum": ["url", "data_uri"]},
        "output files as URLs (the default), or inline as data URIs up to 256 KiB",
    )


def delete_op(op_id: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    summary = "Delete a finished invocation's record and output (409 if unfinished: cancel it)"
    return operation(op_id, summary, params=params, problems=[404, 409, 503], status=204)


def result_op(
    op_id: str, summary: str, params: list[dict[str, Any]], result: str
) -> dict[str, Any]:
    return operation(op_id, summary, ok=ref(result), params=params, problems=[400, 404, 503])


STREAM_EVENTS = (
    "Server-Sent Events, each with an id (1, 2 ...) and JSON data: status (queued, with"
    " `ahead`; running and retrying, with `attempt`), output (`{attempt, output}`: one"
    " chunk), log (`{attempt, line}`), progress, error (`{attempt, error}`: an attempt"
    " failed), and a last done (the result). Comments keep an idle stream open."
)


def stream_op(
    op_id: str, chunk: dict[str, Any] | None = None, first: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    """A streaming invocation's events; ``chunk``: the schema of one output event's chunk;
    ``first``: the path's parameters before the invocation's id."""
    op = operation(
        op_id,
        "Follow a streaming invocation's events (Server-Sent Events; resumable)",
        params=[
            *first,
            invocation_param(),
            parameter("Last-Event-ID", "header", {"type": "string"}, "resume after this event"),
            parameter(
                "after",
                "query",
                {"type": "integer", "minimum": 0},
                "resume after this event (where no header can be set)",
            ),
        ],
        problems=[400, 404, 503],
    )
    events: dict[str, Any] = {"schema": {"type": "string"}}
    if chunk is not None:
        events["x-conveyor-chunk"] = chunk
    op["responses"]["200"] = {
        "description": STREAM_EVENTS,
        "content": {"text/event-stream": events},
    }
    return op


def invocation_param() -> dict[str, Any]:
    return parameter("invocation_id", "path", {"type": "string", "format": "uuid"})


def wait_param(
    max_wait: float, description: str = "seconds to wait for it to finish"
) -> dict[str, Any]:
    return parameter(
        "wait", "query", {"type": "number", "minimum": 0, "maximum": max_wait}, description
    )


def operation(
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
        responses[str(status)] = json_body("success", ok or {})
    for code in problems:
        responses[str(code)] = problem_response(code)
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": tags or ["functions"],
        "responses": responses,
    }
    if params:
        op["parameters"] = params
    return op


def problem_response(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": PROBLEMS[code],
        "content": {PROBLEM_JSON: {"schema": ref("Problem")}},
    }
    if code in (429, 503):
        response["headers"] = {
            "Retry-After": {
                "description": "seconds",
                "schema": {"type": "integer"},
                "required": True,
            }
        }
    return response


def json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def parameter(
    name: str, where: str, schema: dict[str, Any], description: str = ""
) -> dict[str, Any]:
    param = {"name": name, "in": where, "required": where == "path", "schema": schema}
    if description:
        param["description"] = description
    return param


def training_op(name: str, max_wait: float) -> dict[str, Any]:
    """``POST /functions/<name>/trainings``, for a function with ``[training]``: its body
    typed with the training handler's input (``<name>.TrainingRequest``)."""
    wait = wait_param(
        max_wait, "answer 200 with the result if it finishes within this many seconds"
    )
    key = idempotency_param("retrying with the same key and body returns the first training")
    op = operation(
        f"train_{name}",
        f"Train {name}",
        ok=ref("Result"),
        params=[wait, key],
        problems=[400, 404, 409, 413, 415, 422, 503],
        tags=["trainings"],
    )
    op["description"] = (
        "Runs the function's [training] handler; on success its files make a new version"
        " (`output.new_version`), serving at once with `promote`, otherwise retained"
    )
    op["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": ref(f"{name}.TrainingRequest")}},
    }
    op["responses"]["200"]["description"] = "finished within ?wait"
    op["responses"]["202"] = {
        **json_body("accepted: stored in Redis and queued", ref("Accepted")),
        "headers": {
            "Location": {"description": "the training's URL", "schema": {"type": "string"}}
        },
    }
    return op


def cancel_after_param() -> dict[str, Any]:
    return parameter(
        "Cancel-After",
        "header",
        {"type": "string", "pattern": DURATION_PATTERN},
        "not started within this long (30, 30s, 5m, 1h) it ends expired; still running then,"
        " cancelled (a map job: every item)",
    )


def idempotency_param(description: str) -> dict[str, Any]:
    return parameter(
        "Idempotency-Key",
        "header",
        {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
        description,
    )
