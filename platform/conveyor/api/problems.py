"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from conveyor.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    BundleConflictError,
    BundleError,
    BundleTooLargeError,
    ConveyorError,
    DeploymentNotFoundError,
    FileInputError,
    FileNotFoundInStoreError,
    FileTooLargeError,
    FunctionLoadError,
    FunctionNotFoundError,
    FunctionUnavailableError,
    IdempotencyConflictError,
    InputTooLargeError,
    InvocationFinishedError,
    InvocationNotFoundError,
    InvocationUnfinishedError,
    KeyLimitError,
    ManifestError,
    NotReplicatedError,
    NotStreamingError,
    NotTrainableError,
    PermissionDeniedError,
    QueueFullError,
    RedisCommandError,
    TooDeepError,
    TooManyOpenError,
    ValidationError,
    VersionNotFoundError,
)
from conveyor.log import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5

REALM = 'Bearer realm="conveyor"'

_STATUS: dict[type[Exception], tuple[int, str]] = {
    AuthenticationError: (401, "unauthenticated"),
    PermissionDeniedError: (403, "insufficient-scope"),
    FunctionNotFoundError: (404, "function-not-found"),
    InvocationNotFoundError: (404, "invocation-not-found"),
    DeploymentNotFoundError: (404, "deployment-not-found"),
    VersionNotFoundError: (404, "version-not-found"),
    ValidationError: (422, "invalid-input"),
    FileInputError: (422, "invalid-file"),
    FileNotFoundInStoreError: (404, "file-not-found"),
    FileTooLargeError: (413, "file-too-large"),
    # 409, not 422: the key is taken by another request; the body itself may be fine.
    IdempotencyConflictError: (409, "idempotency-key-reused"),
    InputTooLargeError: (413, "input-too-large"),
    TooDeepError: (400, "too-deeply-nested"),
    BundleTooLargeError: (413, "bundle-too-large"),
    BundleConflictError: (422, "conflicting-entries"),
    BundleError: (400, "invalid-bundle"),
    # A pushed folder: its manifest or its code, as a dropped folder's error says.
    ManifestError: (422, "invalid-function"),
    FunctionLoadError: (422, "invalid-function"),
    InvocationFinishedError: (409, "invocation-finished"),
    NotStreamingError: (404, "no-stream"),
    NotTrainableError: (404, "no-training"),
    QueueFullError: (429, "queue-full"),
    TooManyOpenError: (429, "too-many-open"),
    KeyLimitError: (429, "key-limit"),
    InvocationUnfinishedError: (409, "invocation-unfinished"),
    FunctionUnavailableError: (503, "function-unavailable"),
    NotReplicatedError: (503, "not-replicated"),
    BrokerUnavailableError: (503, "broker-unavailable"),
    RedisCommandError: (500, "redis-command-failed"),
}


def problem(
    status: int,
    slug: str,
    detail: str,
    request: Request[Any, Any, Any] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body = problem_body(status, slug, detail, request.url.path if request else None)
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_type(slug: str) -> str:
    return f"urn:conveyor:problem:{slug}"


def problem_body(status: int, slug: str, detail: str, instance: str | None) -> dict[str, Any]:
    """An RFC 9457 problem: what :func:`problem` answers, and what the browser guard (a
    middleware, before any response object exists) sends as bytes."""
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": slug.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    return body


def status_of(exc: ConveyorError) -> tuple[int, str]:
    """The HTTP status and problem slug of an error: its own class's, else its nearest
    base class's (looked up along the MRO, whatever the order of the table)."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500, "internal-error"


def conveyor_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, ConveyorError)
    status, slug = status_of(exc)
    headers, extra = None, dict[str, Any]()
    if status in (429, 503):
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    elif isinstance(exc, AuthenticationError):
        challenge = REALM + (', error="invalid_token"' if exc.invalid_token else "")
        headers = {"WWW-Authenticate": challenge}
    elif isinstance(exc, PermissionDeniedError):
        challenge = f'{REALM}, error="insufficient_scope", scope="{exc.scope}"'
        headers = {"WWW-Authenticate": challenge}
    if isinstance(exc, BrokerUnavailableError):
        log.warning("broker_unavailable", error=str(exc), path=request.url.path)
    if isinstance(exc, RedisCommandError):
        log.error("redis_command_failed", error=str(exc), path=request.url.path)
    if isinstance(exc, ValidationError):
        extra["errors"] = exc.errors
    if isinstance(exc, NotReplicatedError):
        extra.update(invocation_id=exc.invocation_id, accepted=exc.accepted)
    if isinstance(exc, QueueFullError):
        extra.update(limit="max_queued", scope="function", max_queued=exc.limit)
    if isinstance(exc, KeyLimitError):
        headers = rate_limit_headers(exc)
        extra.update(limit=exc.limit, scope="key", retry_after=exc.retry_after)
    return problem(status, slug, str(exc), request, headers, **extra)


def rate_limit_headers(exc: KeyLimitError) -> dict[str, str]:
    """Retry-After, and the limit reached as the IETF RateLimit header fields draft says
    (``RateLimit-Policy``: its quota and window; ``RateLimit``: none left, and when)."""
    quota = getattr(exc.limits, exc.limit)
    window = ""
    if exc.limit == "rate":
        count, _, per = str(quota).partition("/")
        quota, window = count, f";w={int({'s': 1, 'm': 60, 'h': 3600}[per])}"
    elif exc.limit == "daily":
        window = ";w=86400"
    return {
        "Retry-After": str(exc.retry_after),
        "RateLimit-Policy": f'"{exc.limit}";q={quota}{window}',
        "RateLimit": f'"{exc.limit}";r=0;t={exc.retry_after}',
    }


def http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        # Litestar's {"key", "message", "source"} as ours: {"field", "message"}
        extra["errors"] = [
            {
                "field": str(e.get("key") or e.get("source") or "request"),
                "message": str(e.get("message")),
            }
            for e in exc.extra
            if isinstance(e, dict)
        ]
    slug = {
        400: "bad-request",
        404: "not-found",
        405: "method-not-allowed",
        413: "request-too-large",
        415: "unsupported-media-type",
    }.get(exc.status_code, "http-error")
    return problem(exc.status_code, slug, exc.detail, request, exc.headers, **extra)


def recursion_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A safety net: every JSON is held to [api] max_json_depth before anything recursive
    reads it, so this names a path that missed the check; still the caller's 400."""
    log.warning("api_recursion_error", path=request.url.path)
    return problem(400, "too-deeply-nested", "the request nests too deeply to be read", request)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("api_unexpected_error", path=request.url.path, error=repr(exc))
    return problem(500, "internal-error", "internal error; see the API's log", request)


EXCEPTION_HANDLERS = {
    ConveyorError: conveyor_error,
    HTTPException: http_error,
    RecursionError: recursion_error,
    Exception: unexpected_error,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "MediaType", "problem"]
