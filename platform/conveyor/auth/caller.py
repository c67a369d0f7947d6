"""Who is making a request, and what their key lets them do."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.auth.keys import Action, KeyRecord
from conveyor.errors import PermissionDeniedError


@dataclass(frozen=True)
class Caller:
    """The caller of one request: a key, or nobody when ``[api] auth = "none"`` (on
    loopback only), who may do everything."""

    key: KeyRecord | None = None

    @property
    def owner(self) -> str | None:
        """What the invocations this caller makes record as their owner."""
        return None if self.key is None else self.key.id

    def can(self, action: Action, function: str) -> bool:
        return self.key is None or self.key.allows(action, function)

    def sees(self, function: str) -> bool:
        """Listing and describing a function: ``read`` or ``invoke`` on it (a caller who
        may invoke needs its schema)."""
        return any(self.can(action, function) for action in Action)

    def may_handle(
        self, function: str, owner: str | None, action: Action, own_with: Action = Action.INVOKE
    ) -> bool:
        """Reading (``read``) or cancelling and deleting (``invoke``) one invocation: any of
        the function's with the scope, or the caller's own with ``own_with`` (``invoke``;
        ``train`` for a training)."""
        if self.key is None or self.key.admin:
            return True
        own = owner is not None and owner == self.key.id
        if action is Action.READ and self.can(Action.READ, function):
            return True
        return own and self.can(own_with, function)

    def owns(self, owner: str | None) -> bool:
        """A file (or anything else owned by a key): the caller's own, or an admin's look."""
        return self.key is None or self.key.admin or owner == self.key.id

    def require(self, action: Action, function: str) -> None:
        if not self.can(action, function):
            raise self.denied(f"{action}:{function}")

    def require_admin(self) -> None:
        if self.key is not None and not self.key.admin:
            raise self.denied("admin")

    def require_sees(self, function: str) -> None:
        if not self.sees(function):
            raise self.denied(f"read:{function}")

    def denied(self, scope: str, why: str = "") -> PermissionDeniedError:
        name = self.key.name if self.key else "anonymous"
        lacks = f"the key {name!r} does not have the scope {scope!r}"
        return PermissionDeniedError(f"{why}; {lacks}" if why else lacks, scope)
