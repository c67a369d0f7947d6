"""Checkpoints in Redis: the fields of an invocation's record that point at its last
checkpoint (``checkpoint``: the file's id, ``checkpoint_bytes``, ``checkpoint_at``,
``checkpoint_attempt``), changed by ``lua/save.lua``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis

from conveyor.db import keyspace
from conveyor.db.scripts import Scripts, script

SAVE = script("checkpoints", "save")


@dataclass(frozen=True)
class Saved:
    """An invocation's last checkpoint, as its record says."""

    file: str
    bytes: int
    at: float
    attempt: int


class Checkpoints:
    """The worker's side, on a pool child's synchronous client."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts

    @property
    def redis(self) -> redis.Redis:
        return cast("redis.Redis", self.scripts.client)

    def last(self, invocation_id: str) -> Saved | None:
        """The invocation's last checkpoint, if it has one."""
        fields = ("checkpoint", "checkpoint_bytes", "checkpoint_at", "checkpoint_attempt")
        found = cast("list[str | None]", self.redis.hmget(keyspace.record(invocation_id), fields))
        file, size, at, attempt = found
        if not file:
            return None
        return Saved(file, int(size or 0), float(at or 0), int(attempt or 0))

    def save(self, invocation_id: str, attempt: int, file: str, size: int) -> str | None:
        """Point the record at checkpoint ``file``: the file it replaces ('' none), or
        None when the attempt no longer runs (cancelled, or its time ran out)."""
        answer = self.scripts.call(
            SAVE,
            record=keyspace.record(invocation_id),
            holders=keyspace.file_holders(file),
            id=invocation_id,
            attempt=str(attempt),
            file=file,
            bytes=str(size),
            now=repr(time.time()),
        )
        return None if answer == 0 else str(answer)
