"""The fixed paths of the OpenAPI document: every route but the ones each function adds."""

from __future__ import annotations

from typing import Any

from conveyor.api.operations import (
    delete_op,
    deploy_op,
    file_param,
    files_param,
    invocation_param,
    json_body,
    map_op,
    operation,
    parameter,
    problem_response,
    read_file_op,
    ref,
    result_op,
    rollback_op,
    stream_op,
    upload_op,
    wait_param,
)
from conveyor.functions.manifest import NAME_PATTERN
from conveyor.maps.db import RECENT_JOBS


def paths(max_wait: float) -> dict[str, Any]:
    name = parameter("name", "path", {"type": "string", "pattern": NAME_PATTERN})
    invocation, wait = invocation_param(), wait_param(max_wait)
    job = parameter("job_id", "path", {"type": "string", "format": "uuid"})
    training = parameter("training_id", "path", {"type": "string", "format": "uuid"})
    return {
        "/functions": {
            "get": operation("list_functions", "List functions", ok=ref("FunctionList"))
        },
        "/functions/{name}": {
            "get": operation(
                "describe_function",
                "Describe a function, with its input and output schemas",
                ok=ref("FunctionDetail"),
                params=[name],
                problems=[404],
            ),
            "put": deploy_op(name),
            "delete": operation(
                "remove_function",
                "Remove a function (admin); its queued work still runs",
                params=[name],
                problems=[404, 503],
                status=204,
                tags=["versions"],
            ),
        },
        "/functions/{name}/versions": {
            "get": operation(
                "list_versions",
                "A function's retained versions, most recently deployed first",
                ok=ref("VersionList"),
                params=[name],
                problems=[404, 503],
                tags=["versions"],
            )
        },
        "/functions/{name}/rollback": {"post": rollback_op(name)},
        "/keys/me": {
            "get": operation(
                "get_key",
                "The caller's API key: its scopes, limits and usage",
                ok=ref("KeyInfo"),
                problems=[404, 503],
                tags=["keys"],
            )
        },
        "/functions/{name}/purge": {
            "post": operation(
                "purge",
                "Cancel every invocation of a function waiting to start (admin)",
                ok=ref("Purged"),
                params=[name],
                problems=[404, 503],
            )
        },
        "/functions/{name}/schedules": {
            "get": operation(
                "list_schedules",
                "A function's schedules: each one's next tick and last runs",
                ok=ref("ScheduleList"),
                params=[name],
                problems=[404, 503],
                tags=["schedules"],
            )
        },
        "/functions/{name}/schedules/{index}/run": {
            "post": operation(
                "run_schedule",
                "Fire a schedule now (admin)",
                ok=ref("ScheduleFired"),
                params=[name, parameter("index", "path", {"type": "integer", "minimum": 0})],
                problems=[404, 422, 503],
                status=202,
                tags=["schedules"],
            )
        },
        "/functions/{name}/trainings": {
            "get": operation(
                "list_trainings",
                "A function's trainings, newest first",
                ok=ref("TrainingList"),
                params=[name],
                problems=[404, 503],
                tags=["trainings"],
            ),
        },
        "/functions/{name}/trainings/{training_id}": {
            "get": result_op(
                "get_training",
                "A training: its status and, once it succeeded, its new version",
                [name, training, wait],
                "Result",
            )
            | {"tags": ["trainings"]},
        },
        "/functions/{name}/trainings/{training_id}/cancel": {
            "post": operation(
                "cancel_training",
                "Cancel a queued or running training (a running attempt is killed)",
                ok=ref("Result"),
                params=[name, training],
                problems=[404, 409, 503],
                tags=["trainings"],
            )
        },
        "/functions/{name}/trainings/{training_id}/logs": {
            "get": operation(
                "get_training_logs",
                "What a training's last attempt printed or logged",
                ok=ref("InvocationLogs"),
                params=[name, training],
                problems=[404, 503],
                tags=["trainings"],
            )
        },
        "/functions/{name}/deployments/{deployment_id}": {
            "get": operation(
                "get_deployment",
                "How a deployment (PUT /functions/{name}) went (admin)",
                ok=ref("DeploymentStatus"),
                params=[
                    name,
                    parameter("deployment_id", "path", {"type": "string", "format": "uuid"}),
                ],
                problems=[404, 503],
                tags=["versions"],
            )
        },
        "/functions/{name}/unpin": {
            "post": operation(
                "unpin",
                "Serve the latest deploy again (admin)",
                ok=ref("VersionList"),
                params=[name],
                problems=[404, 503],
                tags=["versions"],
            )
        },
        "/functions/{name}/results/{invocation_id}": {
            "get": result_op(
                "get_result",
                "An invocation's result",
                [name, invocation, wait, files_param()],
                "Result",
            ),
            "delete": delete_op("delete_result", [name, invocation]),
        },
        "/functions/{name}/results/{invocation_id}/cancel": {
            "post": operation(
                "cancel",
                "Cancel a queued or running invocation (a running attempt is killed)",
                ok=ref("Result"),
                params=[name, invocation],
                problems=[404, 409, 503],
            )
        },
        "/functions/{name}/results/{invocation_id}/stream": {
            "get": stream_op("stream_events", first=(name,))
        },
        "/functions/{name}/results/{invocation_id}/logs": {
            "get": operation(
                "get_logs",
                "What an invocation's last attempt printed or logged",
                ok=ref("InvocationLogs"),
                params=[name, invocation],
                problems=[404, 503],
            )
        },
        "/functions/{name}/map": {"post": map_op(name)},
        "/functions/{name}/jobs": {
            "get": operation(
                "list_jobs",
                "A function's recent map jobs",
                ok=ref("MapJobList"),
                params=[
                    name,
                    parameter(
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
            "get": operation(
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
                **operation(
                    "get_job_results",
                    "A map job's results as NDJSON, as they come",
                    params=[
                        name,
                        job,
                        parameter(
                            "order", "query", {"type": "string", "enum": ["index", "completion"]}
                        ),
                        parameter(
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
                    **{str(c): problem_response(c) for c in (400, 404, 503)},
                },
            }
        },
        "/functions/{name}/jobs/{job_id}/cancel": {
            "post": operation(
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
                **operation(
                    "metrics", "Prometheus metrics (admin)", problems=[503], tags=["observability"]
                ),
                "responses": {
                    "200": {
                        "description": "the text exposition format, version 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "503": problem_response(503),
                },
            }
        },
        "/queues": {
            "get": operation(
                "queues",
                "Each queue's depth and live workers (admin): what an autoscaler scales on",
                ok=ref("QueueList"),
                problems=[503],
                tags=["observability"],
            )
        },
        "/dashboard/data": {
            "get": operation(
                "dashboard_data",
                "What the dashboard at /dashboard shows",
                ok=ref("DashboardData"),
                params=[
                    parameter(
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
        "/files": {"post": upload_op()},
        "/files/{file_id}": {
            "get": read_file_op(),
            "delete": operation(
                "delete_file",
                "Delete a file",
                params=[file_param()],
                problems=[404, 503],
                status=204,
                tags=["files"],
            ),
        },
        "/healthz": {"get": operation("healthz", "Liveness", ok=ref("Health"), tags=["health"])},
        "/readyz": {
            "get": {
                **operation(
                    "readyz",
                    "Readiness: Redis reachable, functions loaded",
                    ok=ref("Readiness"),
                    tags=["health"],
                ),
                "responses": {
                    "200": json_body("ready", ref("Readiness")),
                    "503": json_body("not ready", ref("Readiness")),
                },
            }
        },
    }
