"""Response bodies of the HTTP API: how each is built, and the model that documents it.

Bodies are built as plain dicts (cheap on the hot path); the pydantic models below are
their published shapes (components of ``/schema``), checked against real responses by
schemathesis in the test suite.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from conveyor.functions.registry import FunctionEntry
from conveyor.invocations.records import InvocationStatus
from conveyor.results import KnownCensus, census_warning

Absent = SkipJsonSchema[None]  # a field that is left out, never null


# -- published shapes ----------------------------------------------------------------------


INVOCATION_ID = "the invocation id: a UUID, or <run>.<step>[.<index>] for a pipeline's step"


class ErrorInfo(BaseModel):
    """Why an invocation failed (or was cancelled)."""

    type: str = Field(description="ValueError, TimeLimitExceeded, ValidationError, Cancelled, …")
    message: str
    traceback: str | Absent = None
    step: str | Absent = Field(None, description="a pipeline's run: the step that failed")
    index: int | Absent = Field(None, description="... and its element, in a for_each step")
    invocation: str | Absent = Field(None, description="... and the invocation that failed")


class RunStep(BaseModel):
    """One step of a pipeline's run."""

    name: str
    function: str
    version: str = Field(description="the version the run uses, frozen when it was accepted")
    status: Literal["pending", "running", "succeeded", "failed", "cancelled"]
    for_each: bool
    invocations: list[str] = Field(description="its invocations' ids, one per element")
    attempts: int = Field(description="attempts started, over its invocations")
    started_at: datetime | Absent = None
    finished_at: datetime | Absent = None


class PipelineStep(BaseModel):
    """One of a pipeline's ``[[steps]]``."""

    name: str
    function: str
    for_each: str | Absent = None
    on_error: Literal["fail", "skip"]


class Accepted(BaseModel):
    """An invocation stored in Redis and queued: it will run, or fail visibly."""

    id: str = Field(description=INVOCATION_ID)
    function: str
    version: str = Field(description="the version the input was validated against")
    status: InvocationStatus
    result_url: str
    stream_url: str | Absent = Field(
        None, description="a streaming function's events (text/event-stream), from now on"
    )
    warning: str | Absent = Field(None, description="why it may wait (no live worker)")
    steps: list[RunStep] | Absent = Field(None, description="a pipeline's run: its steps")


class WebhookState(BaseModel):
    """The webhook an invocation asked for, and how its latest delivery went."""

    url: str
    events: list[Literal["start", "output", "completed"]]
    status: Literal["pending", "delivered", "failed"] | Absent = None
    attempts: int | Absent = None
    last_error: str | Absent = None


class FileInfo(BaseModel):
    """A stored file: an upload, or a file an invocation returned."""

    id: str
    url: str = Field(description="where GET reads it (Range too); an input field may hold it")
    size: int = Field(ge=0)
    sha256: str
    content_type: str
    filename: str | None = None
    expires_at: datetime | None = None


class TrainingOptions(BaseModel):
    promote: bool = Field(description="the new version serves at once (else it is retained)")


class CheckpointInfo(BaseModel):
    bytes: int
    saved_at: datetime
    attempt: int = Field(description="the attempt that saved it")


class Result(BaseModel):
    """An invocation: its status, timings and, once finished, its output or error."""

    id: str = Field(description=INVOCATION_ID)
    function: str
    version: str = Field(description="the version it runs: the one its input was validated against")
    status: InvocationStatus
    queue: str
    priority: int = Field(ge=0, le=9)
    attempts: int = Field(ge=0)
    created_at: datetime
    stream_url: str | Absent = Field(
        None, description="a streaming function's events (text/event-stream), from now on"
    )
    started_at: datetime | Absent = None
    finished_at: datetime | Absent = None
    duration_ms: float | Absent = Field(None, description="created to finished")
    output: Any = Field(None, description="what the handler returned (status succeeded)")
    error: ErrorInfo | Absent = None
    warning: str | Absent = None
    webhook: WebhookState | Absent = None
    progress: Progress | Absent = Field(None, description="what the handler last reported")
    files: list[FileInfo] | Absent = Field(
        None, description="the files the output holds (as their URLs, or ?files=data_uri)"
    )
    steps: list[RunStep] | Absent = Field(None, description="a pipeline's run: its steps")
    training: TrainingOptions | Absent = Field(None, description="a training: how it was asked")
    checkpoint: CheckpointInfo | Absent = Field(
        None, description="the last checkpoint (ctx.checkpoint()): a later attempt resumes from it"
    )


class TrainingList(BaseModel):
    """A function's trainings, newest first (each as its result; ``output`` holds
    ``new_version`` and the handler's ``metrics`` once it succeeded)."""

    function: str
    trainings: list[Result]


class TrainingRequest(BaseModel):
    """A training: the ``[training]`` handler's input (``GET /functions/{name}`` gives its
    ``training_schema``)."""

    model_config = ConfigDict(extra="forbid")

    input: Any
    promote: bool = Field(False, description="serve the new version at once (else retained)")


class Batching(BaseModel):
    max_batch_size: int
    max_wait_ms: float


class FunctionInfo(BaseModel):
    """A function: its status and, if it has a version that serves, how it is served."""

    name: str
    version: str | None = Field(description="the version that serves; null if none does")
    status: Literal["ready", "loading", "error"]
    pinned: bool | Absent = Field(
        None, description="rolled back: this version serves until unpinned or redeployed"
    )
    loading_version: str | Absent = Field(None, description="a newer version being inspected")
    error: str | Absent = Field(None, description="why the newest version cannot serve")
    error_version: str | Absent = None
    description: str | Absent = None
    queue: str | Absent = None
    priority: int | Absent = None
    gpu: int | Absent = None
    batching: Batching | Absent | None = None
    timeout: float | Absent = None
    invoke_url: str | Absent = None
    schema_url: str | Absent = None
    target_queue: str | Absent = None
    environment: str | Absent = Field(
        None,
        description="its own Python environment: the id (digest) of the lock its"
        " requirements resolved to; absent: the platform's environment",
    )
    workers: int | Absent | None = Field(None, description="live workers; null if unknown")
    autoscaled: bool | Absent = None
    warning: str | Absent = None
    steps: list[PipelineStep] | Absent = Field(None, description="a pipeline: its steps")
    trainings_url: str | Absent = Field(None, description="it has [training]: start one here")


class FunctionDetail(FunctionInfo):
    """A function, with the JSON Schemas of its input and output."""

    input_schema: dict[str, Any] | Absent = None
    output_schema: dict[str, Any] | Absent = None
    stream_schema: dict[str, Any] | Absent = Field(
        None, description="a streaming function's chunk: each output event's output"
    )
    training_schema: dict[str, Any] | Absent = Field(
        None, description="its [training] handler's input: a training request's input"
    )
    waiting: int | Absent = Field(None, description="its invocations waiting to start")
    max_queued: int | Absent = Field(
        None, description="[limits] max_queued: past it, invoke answers 429"
    )
    running: int | Absent = Field(None, description="its attempts holding a concurrency slot")
    concurrency: int | Absent = Field(None, description="[limits] concurrency")


class FunctionList(BaseModel):
    functions: list[FunctionInfo]


class FieldError(BaseModel):
    field: str = Field(description="where: input.sepal_length, priority, …")
    message: str
    type: str | Absent = None


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | Absent = None
    errors: list[FieldError] | Absent = Field(None, description="each bad field (422)")
    invocation_id: UUID | Absent = Field(
        None, description="the invocation Redis did not replicate in time (503 not-replicated)"
    )
    accepted: bool | Absent = Field(
        None,
        description="with invocation_id: false, withdrawn and will not run; true, a worker"
        " started it before the replicas confirmed it",
    )


class InvocationLogs(BaseModel):
    """What the invocation's last attempt printed or logged (first 64 KiB, cut marked); a
    pipeline's run: each of its steps' invocations', under the step's name."""

    id: str = Field(description=INVOCATION_ID)
    function: str
    status: InvocationStatus
    logs: str


class Progress(BaseModel):
    fraction: float = Field(ge=0, le=1)
    message: str
    updated_at: datetime


class DashboardWindow(BaseModel):
    """10-second buckets, oldest first."""

    times: list[float]
    rate: list[float] = Field(description="invocations finished per second")
    errors: list[float] = Field(description="invocations failed per second")
    p50: list[float | None] = Field(description="run time, seconds")
    p95: list[float | None]


class DashboardFunction(FunctionDetail):
    depth: int | None = Field(description="invocations waiting on its queue")
    window: DashboardWindow | None
    schedules: list[ScheduleInfo] | Absent = Field(None, description="with its last 3 runs")
    trainings: list[Result] | Absent = Field(None, description="its 5 newest trainings")


class RecentInvocation(BaseModel):
    id: str
    function: str
    status: InvocationStatus
    error_type: str | None
    finished_at: float | None
    duration_ms: float | None
    result_url: str
    logs_url: str


class DashboardData(BaseModel):
    functions: list[DashboardFunction]
    recent: list[RecentInvocation]
    minutes: float


class QueueState(BaseModel):
    depth: int = Field(
        description="invocations waiting: messages of every priority level, and the items"
        " of the queue's batching functions"
    )
    workers: int | None = Field(description="live worker processes on it (null: not known now)")


class QueueList(BaseModel):
    """Each queue's backlog: what an autoscaler scales its workers on (KEDA's metrics-api
    trigger reads ``queues.<name>.depth``)."""

    queues: dict[str, QueueState]


class MapCounts(BaseModel):
    succeeded: int
    failed: int
    cancelled: int
    expired: int = Field(description="items its deadline (Cancel-After) ended before they ran")
    pending: int = Field(description="not finished yet")


class MapJobInfo(BaseModel):
    """A map job: one function over many inputs."""

    id: UUID
    function: str
    version: str
    status: Literal["running", "succeeded", "failed", "cancelled", "expired"]
    total: int
    counts: MapCounts
    progress: float = Field(ge=0, le=1)
    items_per_second: float | None
    eta_seconds: float | None
    priority: int = Field(ge=0, le=9)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_url: str
    results_url: str
    webhook: WebhookState | Absent = None


class MapJobList(BaseModel):
    jobs: list[MapJobInfo]


class VersionInfo(BaseModel):
    """A retained version: it can be invoked (``?version=``) and rolled back to."""

    version: str
    status: Literal["serving", "retained"]
    source: Literal["folder", "push", "training"] = Field(description="how it was last deployed")
    training: str | Absent = Field(None, description="the training that made it")
    created_at: datetime = Field(description="first stored")
    deployed_at: datetime = Field(description="last deployed")
    bundle_bytes: int = Field(description="what the function store holds for it")
    files: int
    files_bytes: int = Field(description="its files, unpacked")
    active: int = Field(
        description="its invocations and map jobs queued or running: kept while any are"
    )


class VersionList(BaseModel):
    """A function's retained versions, most recently deployed first."""

    function: str
    serving: str | None
    pinned: str | None = Field(description="the version rolled back to, if one is")
    latest: str | None = Field(description="the latest deploy (serves unless pinned)")
    versions: list[VersionInfo]


class ScheduleRun(BaseModel):
    """A tick of a schedule (or a run fired by hand), and what came of it."""

    tick: datetime | None = Field(description="the tick; null for a run fired by hand")
    id: str | None = Field(description="the invocation; null when none was made")
    outcome: str = Field(description="fired, manual, skipped, missed, or why it failed")
    status: str | None = Field(description="the invocation's status (expired: its result)")
    at: datetime


class ScheduleInfo(BaseModel):
    """One of a function's ``[[schedules]]``."""

    index: int
    cron: str | Absent = None
    timezone: str | Absent = None
    every: str | Absent = None
    overlap: Literal["skip", "allow"]
    catch_up: bool
    training: bool | Absent = Field(None, description="it starts trainings")
    promote: bool | Absent = Field(None, description="a training's new version serves at once")
    input: Any = None
    next_at: datetime
    runs: list[ScheduleRun] = Field(description="the last runs, newest first")


class ScheduleList(BaseModel):
    function: str
    schedules: list[ScheduleInfo]


class ScheduleFired(BaseModel):
    """A schedule fired by hand: its invocation."""

    id: str
    result_url: str


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[0-9a-f]{12}$", description="a retained version")


class Deployment(BaseModel):
    """A pushed function folder, validated, stored and serving."""

    function: str
    version: str
    outcome: Literal["deployed", "unchanged"]
    source: Literal["folder", "push"]
    bundle_bytes: int
    files: int
    files_bytes: int
    function_url: str
    versions_url: str
    deployment_url: str | Absent = None


class DeploymentAccepted(BaseModel):
    """A deployment taken (202): its bundle is read; unpacking, inspecting and storing it go
    on, and its status URL says how that ends."""

    id: UUID
    function: str
    status: Literal["running"]
    status_url: str


class DeploymentError(BaseModel):
    """Why a deployment failed: the problem a synchronous deploy answers."""

    status: int = Field(description="422 the folder's error, 400 not a zip of a folder, ...")
    type: str
    detail: str


class KeyUsage(BaseModel):
    inflight: int = Field(description="its invocations unfinished")
    queued: int = Field(description="its invocations waiting to start")
    today: int = Field(description="its invocations accepted today (UTC)")
    file_bytes: int = Field(
        description="bytes of its files held now (uploads, data URIs, URL inputs), counted"
        " under max_file_bytes"
    )


class KeyInfo(BaseModel):
    """The caller's API key: what it may do, its limits and what it uses of them."""

    name: str
    scopes: list[str]
    limits: dict[str, Any] = Field(
        description="rate, max_inflight, max_queued, daily: those it has"
    )
    usage: KeyUsage


class Purged(BaseModel):
    """``POST /functions/{name}/purge``: how many waiting invocations were cancelled."""

    function: str
    purged: int


class DeploymentStatus(BaseModel):
    """How a deployment went."""

    id: UUID
    function: str
    status: Literal["running", "deployed", "unchanged", "failed"]
    started_at: datetime
    finished_at: datetime | Absent = None
    status_url: str
    deployment: Deployment | Absent = None
    error: DeploymentError | Absent = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    redis: bool
    functions_loaded: bool


DOCUMENTED: list[type[BaseModel]] = [
    Accepted,
    FileInfo,
    Result,
    FunctionList,
    FunctionDetail,
    Problem,
    Health,
    Readiness,
    InvocationLogs,
    DashboardData,
    QueueList,
    MapJobInfo,
    MapJobList,
    VersionList,
    ScheduleList,
    ScheduleFired,
    TrainingList,
    TrainingRequest,
    Purged,
    KeyInfo,
    RollbackRequest,
    Deployment,
    DeploymentAccepted,
    DeploymentStatus,
]


# -- building bodies -----------------------------------------------------------------------


def function_body(entry: FunctionEntry, *, detail: bool, census: KnownCensus) -> dict[str, Any]:
    spec = entry.spec
    body: dict[str, Any] = {
        "name": entry.name,
        "version": spec.version if spec else None,
        "status": entry.status,
    }
    if entry.pending is not None:
        body["loading_version"] = entry.pending.version
    if entry.error is not None:
        body["error"] = entry.error
        body["error_version"] = entry.error_version
    if entry.pinned:
        body["pinned"] = True
    if spec is not None and spec.manifest.steps is not None:
        body.update(
            description=spec.manifest.function.description,
            invoke_url=f"/functions/{entry.name}/invoke",
            schema_url=f"/functions/{entry.name}",
            steps=[
                {"name": s.name, "function": s.function, "on_error": s.on_error}
                | ({"for_each": s.for_each} if s.for_each else {})
                for s in spec.manifest.steps
            ],
        )
    elif spec is not None:
        manifest = spec.manifest
        body.update(
            description=manifest.function.description,
            queue=manifest.queue.name,
            priority=manifest.queue.priority,
            gpu=manifest.resources.gpu,
            batching=manifest.batching.model_dump() if manifest.batching else None,
            timeout=manifest.limits.timeout,
            invoke_url=f"/functions/{entry.name}/invoke",
            schema_url=f"/functions/{entry.name}",
            target_queue=manifest.target_queue,
            workers=None if census is None else census.count(manifest.target_queue),
            autoscaled=census is not None and census.scaled(manifest.target_queue),
        )
        if manifest.environment_id is not None:  # absent: the platform's environment
            body["environment"] = manifest.environment_id
        if warning := census_warning(census, manifest.target_queue):
            body["warning"] = warning
    if spec is not None and spec.manifest.training is not None:
        body["trainings_url"] = f"/functions/{entry.name}/trainings"
    if detail and entry.schemas is not None:
        body["input_schema"] = entry.schemas.standalone("input")
        body["output_schema"] = entry.schemas.standalone("output")
        if entry.schemas.training is not None:
            body["training_schema"] = entry.schemas.training
        if entry.schemas.streams:
            body["stream_schema"] = entry.schemas.standalone("stream")
    return body
