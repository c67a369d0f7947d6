"""One exception tree. Every error a user can cause says what to fix."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Conveyor failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class SettingsError(ConveyorError):
    """The platform settings (deploy.toml or CONVEYOR_* variables) are invalid."""


class ManifestError(ConveyorError):
    """A function folder's function.toml is invalid."""


class WorkerOptionsError(ConveyorError):
    """The options of ``conveyor worker`` are invalid or do not fit together."""


class FunctionLoadError(ConveyorError):
    """A function's code could not be imported or does not fit the handler contract."""


class EnvironmentResolveError(FunctionLoadError):
    """A function's [environment] could not be resolved against the worker runtime or
    built: the deploy fails and the last good version keeps serving."""


class FunctionNotFoundError(ConveyorError):
    """No function of that name is deployed."""


class FunctionUnavailableError(ConveyorError):
    """The function exists but has no good version to serve."""


class VersionNotFoundError(ConveyorError):
    """The function store does not retain that version of the function."""


class BundleError(ConveyorError):
    """A function bundle is not a zip archive of a function folder."""


class BundleConflictError(BundleError):
    """Entries of a function bundle cannot all be files of one folder (a file and a folder
    of the same name, or a name twice)."""


class BundleTooLargeError(BundleError):
    """A function folder is larger than the function store takes ([store] max_bundle_bytes)."""


class SetupError(ConveyorError):
    """A class handler's setup() raised; the invocation that needed it fails."""


class DeploymentNotFoundError(ConveyorError):
    """No deployment of that id (never made, or its record expired after a day)."""


class InvocationNotFoundError(ConveyorError):
    """No invocation of that id exists (never did, or its result expired)."""


class InvocationFinishedError(ConveyorError):
    """The invocation has already finished and cannot be cancelled."""


class ValidationError(ConveyorError):
    """The input does not match the function's input schema.

    ``errors`` names each bad field (``input.sepal_length``) with what is wrong with it.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


class IdempotencyConflictError(ConveyorError):
    """The Idempotency-Key was already used with a different request body."""


class InvocationUnfinishedError(ConveyorError):
    """The invocation has not finished; cancel it before deleting it."""


class InputTooLargeError(ConveyorError):
    """The input is larger than the function accepts."""


class TooDeepError(ConveyorError):
    """The JSON nests deeper than the platform accepts ([api] max_json_depth)."""


class OutputNotSerializableError(ConveyorError):
    """The handler returned something that is not JSON-serialisable."""


class TextStreamError(ConveyorError):
    """A ``-> TextStream`` handler yielded something other than a string."""


class StreamTooLargeError(ConveyorError):
    """A streaming invocation's events went past its [limits] max_stream_bytes."""


class KeyLimitError(ConveyorError):
    """An API key's limit is reached (``conveyor keys update``): a 429 naming it."""

    def __init__(self, limit: str, retry_after: int, limits: Any) -> None:
        super().__init__(
            f"the API key's {limit} limit is reached ({getattr(limits, limit)}): retry after"
            f" {retry_after} s"
        )
        self.limit = limit
        self.retry_after = max(1, retry_after)
        self.limits = limits  # the key's KeyLimits


class TooManyOpenError(ConveyorError):
    """Too many downloads and event streams are open (per API process, or for one key)."""


class QueueFullError(ConveyorError):
    """A function's ``[limits] max_queued`` invocations are waiting: a 429, retried later."""

    def __init__(self, message: str, *, function: str, limit: int) -> None:
        super().__init__(message)
        self.function = function
        self.limit = limit


class NotTrainableError(ConveyorError):
    """The function has no ``[training]`` table, or the id is not one of its trainings."""


class TrainingError(ConveyorError):
    """A training's files do not make a version that deploys (its import fails, ...):
    the training fails, and what serves is untouched."""


class CheckpointError(ConveyorError):
    """A checkpoint could not be saved: past [limits] max_checkpoint_bytes, or not a
    directory of files."""


class WorkerStopping(BaseException):  # like KeyboardInterrupt: not an Exception
    """The worker shut down while the attempt ran, past its ``[worker] shutdown_grace``:
    the attempt is stopped and the invocation queued again. A BaseException, so a
    handler's ``except Exception`` does not swallow it."""


class NotStreamingError(ConveyorError):
    """The invocation's function does not stream: it has no stream to read."""


class FileNotFoundInStoreError(ConveyorError):
    """No file of that id (never uploaded, expired, or deleted)."""


class FileTooLargeError(ConveyorError):
    """The file is larger than the platform takes ([files] max_bytes)."""


class FileInputError(ValidationError):
    """A file input could not be taken: its field, and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field}: {message}", [{"field": field, "message": message, "type": "file"}]
        )
        self.field = field
        self.reason = message


class BatchSizeError(ConveyorError):
    """predict_batch returned a different number of outputs than it was given inputs."""


class BrokerUnavailableError(ConveyorError):
    """Redis, the broker and result store, cannot be reached."""


class RedisCommandError(ConveyorError):
    """Redis refused a command or a script failed: a fault of Conveyor's, not an outage
    (a script checks what can fail before it writes, so nothing half-done is left)."""


class RedisFullError(BrokerUnavailableError):
    """Redis holds more than ``[redis] max_memory_bytes`` (or ``max_memory_fraction`` of its
    maxmemory): new work is refused with 503 until it drains; what was accepted runs."""


class NotReplicatedError(BrokerUnavailableError):
    """Redis did not confirm the submit on [redis] min_replicas replicas in time."""

    def __init__(self, message: str, *, invocation_id: str, accepted: bool) -> None:
        super().__init__(message)
        self.invocation_id = invocation_id
        self.accepted = accepted  # False: withdrawn, it will not run; True: a worker has it


class ApiKeyError(ConveyorError):
    """An API key cannot be created or revoked as asked."""


class AuthenticationError(ConveyorError):
    """The request has no valid API key (Authorization: Bearer <key>)."""

    def __init__(self, message: str | None = None, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token  # a key was given, and it is not (or no longer) one


class PermissionDeniedError(ConveyorError):
    """The API key is valid but its scopes do not allow this."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message)
        self.scope = scope  # a scope that would allow it
