"""``function.toml``: the declarative half of a function folder.

Every key but ``[function] handler`` has a default. Unknown keys, wrong types and
out-of-range values raise :class:`ManifestError` naming the file, the key and the reason.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from conveyor.errors import ManifestError, TooDeepError
from conveyor.nesting import DEFAULT_DEPTH, check_value
from conveyor.settings import QueueSettings, gpu_queue

MANIFEST_FILE = "function.toml"
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
STEP_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

PositiveSeconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FunctionSection(_Section):
    # module:attribute; a pipeline (``[[steps]]``) has none
    handler: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] | None = None
    description: str = ""


class QueueSection(_Section):
    name: str = "default"
    priority: Annotated[int, Field(ge=0, le=9)] = 5


class ResourcesSection(_Section):
    gpu: Literal[0, 1] = 0  # whole GPUs one worker process needs


class LimitsSection(_Section):
    timeout: PositiveSeconds = 30.0
    soft_timeout: PositiveSeconds | None = None
    max_input_bytes: Annotated[int, Field(gt=0, le=1024 * 1024 * 1024)] = 1024 * 1024
    # A streaming invocation's events (chunks, lines printed) in all; past it, it fails.
    max_stream_bytes: Annotated[int, Field(gt=0, le=1024 * 1024 * 1024)] = 64 * 1024 * 1024
    # Attempts running at once across every worker (None: no limit); the rest wait.
    concurrency: Annotated[int, Field(ge=1, le=100_000)] | None = None
    # Starts at most this often across every worker: "100/s", "30/m", "1000/h" (None: no
    # limit); the rest wait their turn.
    rate: str | None = None

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            rate_per_second(value)
        return value

    @property
    def emission(self) -> float | None:
        """Seconds between two starts under ``rate`` (None: no rate)."""
        return None if self.rate is None else 1.0 / rate_per_second(self.rate)

    # Seconds an invocation may wait to start; past it, it ends ``expired`` (None: no limit).
    max_queue_time: PositiveSeconds | None = None
    # Invocations waiting to start, at most; past it, invoke answers 429 (None: no cap).
    max_queued: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    # What one ``ctx.checkpoint()`` may save (its directory, packed); past it, it raises.
    max_checkpoint_bytes: Annotated[int, Field(gt=0, le=16 * 1024 * 1024 * 1024)] = (
        1024 * 1024 * 1024
    )

    @property
    def cancel_grace(self) -> float:
        """Seconds a cancelled streaming attempt has to reach its next yield (where its
        generator is closed) before it is killed: the soft limit's grace when one is set."""
        if self.soft_timeout is not None:
            return self.timeout - self.soft_timeout
        return min(5.0, self.timeout)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Self:
        if self.soft_timeout is not None and self.soft_timeout >= self.timeout:
            raise ValueError(
                f"soft_timeout ({self.soft_timeout}) must be below timeout ({self.timeout})"
            )
        return self


_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|m|h)$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def per_period(rate: str) -> float:
    """The seconds of a rate's period (``"10/s"``: 1; ``"600/m"``: 60)."""
    return _PER[rate.strip()[-1]]


def rate_per_second(rate: str) -> float:
    """``"100/s"``, ``"30/m"``, ``"1000/h"`` as starts per second (ValueError: what it may be)."""
    match = _RATE.match(rate.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{rate!r} is not a rate: write a count per s, m or h ('100/s')")
    per_second = float(match.group(1)) / _PER[match.group(2)]
    if per_second > 100_000:
        raise ValueError(f"{rate!r}: at most 100000 starts a second")
    return per_second


class RetriesSection(_Section):
    max: Annotated[int, Field(ge=0, le=100)] = 0
    backoff: Annotated[float, Field(ge=0, le=3600)] = 1.0
    on: list[Annotated[str, Field(pattern=IDENTIFIER)]] = Field(default_factory=list)


class BatchingSection(_Section):
    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    max_wait_ms: Annotated[float, Field(ge=0, le=60_000)] = 10.0


class ResultsSection(_Section):
    ttl: Annotated[int, Field(gt=0, le=30 * 24 * 3600)] = 3600


class TrainingSection(_Section):
    """``[training]``: the handler that makes a new version of the function from files it
    writes (see :mod:`conveyor.trainings`); what it leaves out is the function's."""

    handler: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    queue: str | None = None
    timeout: PositiveSeconds = 3600.0
    gpu: Literal[0, 1] | None = None
    retries: RetriesSection | None = None


class StepSection(_Section):
    """One ``[[steps]]`` entry of a pipeline (see :mod:`conveyor.pipelines`)."""

    name: Annotated[str, Field(pattern=STEP_NAME_PATTERN)]
    function: Annotated[str, Field(pattern=NAME_PATTERN)]
    # a "$." selector, a table (an object), an array, or a literal; None: the default
    input: Any = None
    for_each: Annotated[str, Field(pattern=r"^\$\.")] | None = None
    priority: Annotated[int, Field(ge=0, le=9)] | None = None
    on_error: Literal["fail", "skip"] = "fail"


_EVERY = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def every_seconds(every: str) -> float:
    """``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` in seconds (ValueError: what it may be)."""
    match = _EVERY.match(every.strip())
    if match is None:
        raise ValueError(f"{every!r} is not a period: write a number and s, m, h or d ('30s')")
    return float(match.group(1)) * _UNIT[match.group(2)]


class ScheduleSection(_Section):
    """One ``[[schedules]]`` entry: when its function is invoked by itself."""

    cron: str | None = None  # five fields, as crontab(5); in ``timezone``
    every: str | None = None  # a period: "30s", "5m", "1h", "1d" (ticks on multiples of it)
    timezone: str = "UTC"
    input: Any = None
    overlap: Literal["skip", "allow"] = "skip"
    catch_up: bool = False
    training: bool = False  # start a training ([training]) rather than an invocation
    promote: bool = False  # with training: serve each new version at once

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from croniter import croniter  # only manifests with schedules need it

            try:
                croniter(value)
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{value!r} is not a cron expression: {exc}") from None
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | None) -> str | None:
        if value is not None and every_seconds(value) < 1:
            raise ValueError(f"{value!r}: a schedule fires at most once a second")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone (an IANA name)") from None
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> Self:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give either cron or every")
        if self.promote and not self.training:
            raise ValueError("promote applies to a training: add training = true")
        return self


class PipelineSection(_Section):
    output: Annotated[str, Field(pattern=r"^\$\.")] | None = None  # default: the last step's
    # a JSON Schema (a table) or a .json file in the folder; default: the first step's input
    input_schema: dict[str, Any] | Annotated[str, Field(pattern=r"\.json$")] | None = None


ENVIRONMENT_ID = r"^[0-9a-f]{16}$"
REQUIREMENTS_FILE = "requirements.txt"


class EnvironmentSection(_Section):
    """The function's own Python environment: ``requirements`` (a file in the folder, pip's
    format) or ``packages`` (the same lines, inline); resolved at deploy into a lock whose
    digest, ``id``, the platform sets (never the folder)."""

    requirements: Annotated[str, Field(pattern=r"^[\w.-][\w./-]*$")] | None = None
    packages: list[Annotated[str, Field(min_length=1, max_length=400)]] | None = None
    id: Annotated[str, Field(pattern=ENVIRONMENT_ID)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.requirements is not None and self.packages is not None:
            raise ValueError("give requirements (a file) or packages (a list), not both")
        if self.requirements is None and self.packages is None:
            raise ValueError(f'give requirements = "{REQUIREMENTS_FILE}" or packages = [...]')
        if self.requirements is not None and ".." in self.requirements.split("/"):
            raise ValueError("requirements: a file inside the function's folder")
        return self


class Manifest(_Section):
    function: FunctionSection = FunctionSection()
    queue: QueueSection = QueueSection()
    resources: ResourcesSection = ResourcesSection()
    limits: LimitsSection = LimitsSection()
    retries: RetriesSection = RetriesSection()
    batching: BatchingSection | None = None
    results: ResultsSection = ResultsSection()
    steps: list[StepSection] | None = None  # a pipeline: a function made of functions
    pipeline: PipelineSection | None = None
    schedules: list[ScheduleSection] = Field(default_factory=list)
    training: TrainingSection | None = None
    environment: EnvironmentSection | None = None

    @model_validator(mode="after")
    def _trained_schedules(self) -> Self:
        for i, schedule in enumerate(self.schedules, 1):
            if schedule.training and self.training is None:
                raise ValueError(
                    f"[[schedules]] #{i} training: true needs a [training] table (its handler)"
                )
        return self

    @model_validator(mode="after")
    def _handler_or_steps(self) -> Self:
        if self.steps is None:
            if self.function.handler is None:
                raise ValueError(
                    "[function] handler is required (module:attribute), or [[steps]] for a pipeline"
                )
            if self.pipeline is not None:
                raise ValueError("[pipeline] is only for a pipeline: add [[steps]]")
            return self
        if self.function.handler is not None:
            raise ValueError(
                "[function] handler and [[steps]] are both set: a function has a handler, a"
                " pipeline has steps; remove one"
            )
        if not self.steps:
            raise ValueError("[[steps]] is empty: a pipeline needs at least one step")
        defaults = {
            "batching": None,
            "retries": RetriesSection(),
            "resources": ResourcesSection(),
            "training": None,
        }
        for section, default in defaults.items():
            if getattr(self, section) != default:
                raise ValueError(
                    f"[{section}] does not apply to a pipeline: each step's function has its own"
                )
        for key in ("max_queued", "max_queue_time", "concurrency", "rate"):
            if getattr(self.limits, key) is not None:
                raise ValueError(
                    f"[limits] {key} does not apply to a pipeline yet: set it on its steps'"
                    " functions"
                )
        return self

    @property
    def is_pipeline(self) -> bool:
        return self.steps is not None

    @property
    def target_queue(self) -> str:
        """The queue its invocations go to: the GPU variant of ``[queue] name`` when the
        function needs a GPU, consumed only by ``conveyor worker --gpus``; with its own
        environment, that queue's variant for it, consumed only by its processes."""
        return environment_queue(self.base_queue, self.environment_id)

    @property
    def base_queue(self) -> str:
        """The queue of the workers that serve it: ``[queue] name``, or its GPU variant
        (an environment's process is started by a worker of that queue)."""
        return gpu_queue(self.queue.name) if self.resources.gpu else self.queue.name

    @property
    def environment_id(self) -> str | None:
        """The resolved environment it runs in; None: the platform's own."""
        return None if self.environment is None else self.environment.id

    def with_environment(self, environment_id: str) -> Manifest:
        """This manifest, its environment resolved to ``environment_id``."""
        assert self.environment is not None
        resolved = self.environment.model_copy(update={"id": environment_id})
        return self.model_copy(update={"environment": resolved})

    def for_training(self) -> Manifest:
        """The manifest a training runs under: ``[training]``'s handler, queue, time limit,
        GPU and retries in place of the function's; no batching."""
        training = self.training
        if training is None:
            raise ManifestError("this function has no [training] table")
        return self.model_copy(
            update={
                "function": FunctionSection(handler=training.handler),
                "queue": self.queue.model_copy(update={"name": training.queue or self.queue.name}),
                "limits": self.limits.model_copy(
                    update={"timeout": training.timeout, "soft_timeout": None}
                ),
                "resources": ResourcesSection(
                    gpu=self.resources.gpu if training.gpu is None else training.gpu
                ),
                "retries": training.retries or self.retries,
                "batching": None,
                "training": None,
                "schedules": [],
            }
        )

    @property
    def module(self) -> str:
        return self.handler.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.handler.partition(":")[2]

    @property
    def handler(self) -> str:
        if self.function.handler is None:
            raise ManifestError("a pipeline has no handler: its steps are other functions")
        return self.function.handler


def check_function_name(name: str) -> None:
    """A pushed function's name, or ManifestError saying what a name may be."""
    if not re.match(NAME_PATTERN, name):
        raise ManifestError(f"{name!r}: a function name must match {NAME_PATTERN}")


def parse_manifest(path: Path, queues: Mapping[str, QueueSettings]) -> Manifest:
    """Read and validate one ``function.toml`` against the deployment's queues."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: missing; every function folder needs one") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ManifestError(f"{path}: arrays or tables nest too deeply to be read") from None
    try:
        check_value(data, DEFAULT_DEPTH, "it")
    except TooDeepError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_describe(path, exc)) from exc
    queue = queues.get(manifest.queue.name)
    if queue is None:
        raise ManifestError(
            f"{path}: [queue] name: {manifest.queue.name!r} is not a queue of this deployment"
            f" (deploy.toml has: {', '.join(sorted(queues))})"
        )
    if manifest.limits.timeout > queue.max_timeout:
        raise ManifestError(
            f"{path}: [limits] timeout: {manifest.limits.timeout}s exceeds the max_timeout"
            f" ({queue.max_timeout}s) of queue {manifest.queue.name!r} in deploy.toml"
        )
    if manifest.training is not None:
        training = _check_training(path, manifest.training, manifest.queue.name, queues)
        manifest = manifest.model_copy(update={"training": training})
    return _check_environment(path, manifest)


def _check_environment(path: Path, manifest: Manifest) -> Manifest:
    """``[environment]`` as the folder gives it: never its id (the platform resolves that);
    a ``requirements.txt`` beside the manifest, with no table, is its requirements."""
    section = manifest.environment
    if section is None:
        if (path.parent / REQUIREMENTS_FILE).is_file() and not manifest.is_pipeline:
            section = EnvironmentSection(requirements=REQUIREMENTS_FILE)
            return manifest.model_copy(update={"environment": section})
        return manifest
    if manifest.is_pipeline:
        raise ManifestError(
            f"{path}: [environment] does not apply to a pipeline: each step runs in its"
            " function's environment"
        )
    if section.id is not None:
        raise ManifestError(
            f"{path}: [environment] id: unknown key (the platform sets it when it resolves"
            " the requirements)"
        )
    if section.requirements is not None and not (path.parent / section.requirements).is_file():
        raise ManifestError(
            f"{path}: [environment] requirements: {section.requirements!r} is not a file in"
            " the function's folder"
        )
    return manifest


def environment_queue(queue: str, environment_id: str | None) -> str:
    """The variant of ``queue`` consumed only by worker processes of one environment."""
    return queue if environment_id is None else f"{queue}{ENVIRONMENT_QUEUE_INFIX}{environment_id}"


ENVIRONMENT_QUEUE_INFIX = ".env-"


def _check_training(
    path: Path, training: TrainingSection, default: str, queues: Mapping[str, QueueSettings]
) -> TrainingSection:
    """``[training]`` against its queue; a timeout left out is the queue's longest, up to an
    hour (a default never refuses another default)."""
    name = training.queue or default
    queue = queues.get(name)
    if queue is None:
        raise ManifestError(
            f"{path}: [training] queue: {name!r} is not a queue of this deployment"
            f" (deploy.toml has: {', '.join(sorted(queues))})"
        )
    if "timeout" not in training.model_fields_set:
        return training.model_copy(update={"timeout": min(training.timeout, queue.max_timeout)})
    if training.timeout > queue.max_timeout:
        raise ManifestError(
            f"{path}: [training] timeout: {training.timeout}s exceeds the max_timeout"
            f" ({queue.max_timeout}s) of queue {name!r} in deploy.toml"
        )
    return training


def _describe(path: Path, exc: ValidationError) -> str:
    reasons = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        if not loc:
            reasons.append(f"{path}: {msg}")
            continue
        if loc[0] in ("steps", "schedules") and len(loc) > 1 and loc[1].isdigit():
            where = f"[[{loc[0]}]] #{int(loc[1]) + 1} {'.'.join(loc[2:])}".strip()
        elif len(loc) > 1:
            where = f"[{loc[0]}] {'.'.join(loc[1:])}"
        else:
            where = f"[{loc[0]}]"
        reasons.append(f"{path}: {where}: {msg}")
    return "; ".join(reasons)
