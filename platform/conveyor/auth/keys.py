"""API keys: how they look, how they are stored (a SHA-256, never the key), what they allow.

A key is ``cvk_`` and 43 URL-safe characters (32 random bytes). Its scopes:

- ``invoke:<glob>``: invoke the functions whose names match, and read, cancel and delete
  the invocations this key made;
- ``read:<glob>``: list and describe the matching functions, read any of their results;
- ``train:<glob>``: start trainings of the matching functions (each makes a new version),
  and read and cancel the trainings this key started;
- ``deploy:<glob>``: serve a new version of the matching functions (a training's
  ``promote``, which also ends an admin's rollback pin);
- ``files:write``: upload files (``POST /files``); an ``invoke:`` scope allows it too;
- ``admin``: everything.

Globs match function names as shell patterns (``invoke:*``, ``read:iris``,
``invoke:team-a-*``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from conveyor.errors import ApiKeyError
from conveyor.functions.manifest import rate_per_second

PREFIX = "cvk_"
RANDOM_BYTES = 32
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
_SCOPE = re.compile(
    r"^(?:admin|files:write|(?P<action>invoke|read|train|deploy):(?P<glob>[a-z0-9_*?\[\]!-]{1,64}))$"
)
FILES_WRITE = "files:write"
SCOPE_FORMS = "invoke:<glob>, read:<glob>, train:<glob>, deploy:<glob>, files:write or admin"


class Action(StrEnum):
    INVOKE = "invoke"
    READ = "read"
    TRAIN = "train"
    DEPLOY = "deploy"


def new_key() -> str:
    """A fresh key, shown once to whoever creates it."""
    return PREFIX + secrets.token_urlsafe(RANDOM_BYTES)


def digest(key: str) -> str:
    """What is stored of a key, and what a presented key is looked up by."""
    return hashlib.sha256(key.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def parse_scopes(scopes: list[str]) -> tuple[str, ...]:
    """Check each scope's form; raise naming the bad one and the forms that exist."""
    if not scopes:
        raise ApiKeyError(f"give a key at least one --scope ({SCOPE_FORMS})")
    for scope in scopes:
        if not _SCOPE.match(scope):
            raise ApiKeyError(
                f"scope {scope!r} is not one of {SCOPE_FORMS}"
                " (a glob matches function names: *, iris, team-a-*)"
            )
    return tuple(dict.fromkeys(scopes))


def check_name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise ApiKeyError(f"key name {name!r} must match {NAME_PATTERN}")
    return name


@dataclass(frozen=True)
class KeyLimits:
    """What one key may do, across every API process (None: no limit): requests a
    period (``rate``: "10/s", "600/m"; a burst of one period's count), invocations
    unfinished (``max_inflight``) and waiting to start (``max_queued``), accepted per
    UTC day (``daily``), and bytes of files it holds at once (``max_file_bytes``: its
    uploads, data URIs and URL inputs, until they expire or are deleted)."""

    rate: str | None = None
    max_inflight: int | None = None
    max_queued: int | None = None
    daily: int | None = None
    max_file_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.rate is not None:
            try:
                rate_per_second(self.rate)
            except ValueError as exc:
                raise ApiKeyError(f"--rate: {exc}") from None
        for name in ("max_inflight", "max_queued", "daily", "max_file_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ApiKeyError(f"--{name.replace('_', '-')} must be at least 1 (or none)")

    @property
    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def shown(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class KeyRecord:
    """A key as stored: never the key itself."""

    id: str  # random, stable for the key's life: what its invocations record as owner
    name: str
    scopes: tuple[str, ...]
    created_at: float
    digest: str
    limits: KeyLimits = KeyLimits()

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def uploads(self) -> bool:
        """Whether the key may store files: ``files:write``, any ``invoke:`` scope (a file
        is an input), or ``admin``."""
        return self.admin or any(
            scope == FILES_WRITE or scope.startswith("invoke:") for scope in self.scopes
        )

    def allows(self, action: Action, function: str) -> bool:
        """Whether the key may ``action`` the function (``read`` of an invocation it made
        is granted by ``invoke`` too; see :meth:`Caller.may_read`)."""
        if self.admin:
            return True
        for scope in self.scopes:
            kind, _, glob = scope.partition(":")
            if kind == action and fnmatch.fnmatchcase(function, glob):
                return True
        return False
