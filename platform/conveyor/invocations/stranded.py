"""Messages lost between kombu's two commands: found, and queued again.

kombu's Redis transport takes a message off its list with ``BRPOP`` and then, in a second
command, records it in the ``unacked`` hash (from which a dead worker's messages are
redelivered). A worker SIGKILLed between the two, or a primary Redis that dies after
replicating the first and not the second, leaves an invocation ``queued`` whose message
is nowhere. So the submit keeps a copy of each message (``keyspace.SENT`` / ``SENT_MESSAGES``,
with a sequence number per list) until a worker's START script drops it, and a worker
sweeps every ``[worker] restore_interval`` (one worker per interval, under a lock):

- a copy whose sequence is below that of the oldest message still on its list (or whose
  list is empty) was taken off the list;
- taken, not in ``unacked`` (under its delivery tag: the invocation's id, or for a
  retry's message the one the copy names) and not started: stranded -- unless a consumer
  is between its
  two commands right now, so only a copy found stranded by two sweeps at least an interval
  apart is pushed again. A script re-checks all of it, and that the message is not on its
  list after all (kombu puts a dead worker's messages back at the list's old end, out of
  sequence); a record neither ``queued`` nor ``retrying`` (e.g. cancelled) only drops the
  copy. A retry's message is copied as a submit's is (it is written with the record's change
  to ``retrying``: :class:`conveyor.invocations.records.Requeue`).

A copy costs its message's size again in Redis while the invocation waits.
"""

from __future__ import annotations

import json
import time
from typing import cast

import redis

from conveyor.db import keyspace
from conveyor.db.scripts import Scripts, script
from conveyor.log import get_logger

log = get_logger(__name__)

RESCUE = script("invocations", "rescue")


def _entry(task_id: str, entry: str) -> tuple[str, int, str, str]:
    """A copy's list, sequence, delivery tag (a submit's copy names no tag: its tag is
    the invocation's id) and owner: the key of a map job, for a chunk's message ('' for an
    invocation's: its record is the task's own)."""
    queue_list, seq, *rest = entry.split(" ")
    return queue_list, int(seq), rest[0] if rest else task_id, rest[1] if len(rest) > 1 else ""


class StrandedSweeper:
    """One worker's part: :meth:`sweep` when its interval comes."""

    def __init__(self, client: redis.Redis, interval: float, name: str) -> None:
        self.client = client
        self.interval = interval
        self.name = name
        self.scripts = Scripts(client)

    def sweep(self) -> list[str]:
        """Queue again what two sweeps found stranded; the ids queued again."""
        lock_ms = max(1, int(self.interval * 900))
        if not self.client.set(keyspace.STRANDED_LOCK, self.name, nx=True, px=lock_ms):
            return []  # another worker sweeps this interval
        entries = cast(dict[str, str], self.client.hgetall(keyspace.SENT))
        stranded = self._stranded(entries)
        now = time.time()
        seen = cast(dict[str, str], self.client.hgetall(keyspace.STRANDED))
        gone = [i for i in seen if i not in stranded]
        pipe = self.client.pipeline(transaction=False)
        if gone:
            pipe.hdel(keyspace.STRANDED, *gone)
        new = {i: repr(now) for i in stranded if i not in seen}
        if new:
            pipe.hset(keyspace.STRANDED, mapping=new)  # type: ignore[arg-type]
        pipe.execute()
        requeued = []
        for invocation_id in stranded:
            first = seen.get(invocation_id)
            if first is None or now - float(first) < self.interval:
                continue
            entry = entries[invocation_id]
            queue_list, _, tag, owner = _entry(invocation_id, entry)
            outcome = self.scripts.call(
                RESCUE,
                record=owner or keyspace.record(invocation_id),
                sent=keyspace.SENT,
                sent_messages=keyspace.SENT_MESSAGES,
                unacked=keyspace.KOMBU_UNACKED,
                queue_list=queue_list,
                sent_sequence=keyspace.sent_sequence(queue_list),
                id=invocation_id,
                entry=entry,
                tag=tag,
                wanted="running" if owner else "queued retrying",  # a chunk's job still runs
                owner=owner,
            )
            self.client.hdel(keyspace.STRANDED, invocation_id)
            if outcome == "requeued":
                requeued.append(invocation_id)
                log.warning(
                    "invocation_requeued",
                    invocation_id=invocation_id,
                    reason="message_lost",
                    queue=queue_list,
                )
        return requeued

    def _stranded(self, entries: dict[str, str]) -> set[str]:
        """Copies whose message left its list and is neither held nor started."""
        parsed = {i: _entry(i, e) for i, e in entries.items()}
        lists = {queue_list for queue_list, _, _, _ in parsed.values()}
        taken_below = {q: self._taken_below(q, entries) for q in lists}
        taken = [i for i, (q, seq, _, _) in parsed.items() if seq < taken_below[q]]
        if not taken:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for invocation_id in taken:
            pipe.hexists(keyspace.KOMBU_UNACKED, parsed[invocation_id][2])
        held = pipe.execute()
        return {i for i, h in zip(taken, held, strict=True) if not h}

    def _taken_below(self, queue_list: str, entries: dict[str, str]) -> float:
        """The sequence below which every copy of ``queue_list`` was taken off it: that of
        its oldest message (-1 when that one has no copy: nothing can be said), or
        everything when it is empty."""
        oldest = self.client.lindex(queue_list, -1)
        if oldest is None:
            return float("inf")
        try:
            task_id = json.loads(cast(str, oldest))["headers"]["id"]
        except (ValueError, KeyError, TypeError):
            return -1
        entry = entries.get(str(task_id))
        if not entry or not entry.startswith(queue_list + " "):
            return -1
        return _entry(str(task_id), entry)[1]


def sweep_quietly(sweeper: StrandedSweeper) -> None:
    """A sweep from a worker's heartbeat: Redis being away is the heartbeat's to report."""
    try:
        sweeper.sweep()
    except redis.RedisError as exc:
        log.debug("stranded_sweep_failed", error=str(exc))


__all__ = ["RESCUE", "StrandedSweeper", "sweep_quietly"]
