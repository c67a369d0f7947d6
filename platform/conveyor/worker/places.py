"""[limits] concurrency and rate for work that runs several items at once or in turn: a
batch (``worker/batches.py``) and a map job's chunk (``worker/chunks.py``). Each item
counts: before its items run, the holder takes a place (a slot) and a turn for each, up to
as many as are free (``invocations/lua/take_places.lua``); when they are over, or when a
batch's items take them over as their own slots, the places end
(``settle_places.lua``). A single invocation's slot and turn are taken in ``start.lua``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from conveyor.db import keyspace
from conveyor.db.scripts import Scripts, script
from conveyor.functions.manifest import Manifest
from conveyor.invocations.records import UNPARK_EVERY, limit_keys

TAKE = script("invocations", "take_places")
SETTLE = script("invocations", "settle_places")


@dataclass(frozen=True)
class Places:
    """One function's concurrency and rate, as its batches or chunks take them."""

    scripts: Scripts
    function: str
    manifest: Manifest
    lease: float  # [worker] slot_lease

    @property
    def limited(self) -> bool:
        limits = self.manifest.limits
        return limits.concurrency is not None or limits.rate is not None

    def take(
        self, token: str, size: int, park: tuple[str, str] | None = None
    ) -> tuple[int, float | None]:
        """Places for up to ``size`` items under ``token``: (how many, and when none, the
        time the rate's next turn comes, or None when slots are what is missing). With
        ``park``, a batch trigger's (queue list, message), a refused one is parked until
        it may run."""
        limits = self.manifest.limits
        queue_list, message = park or ("", "")
        now = time.time()
        places, turn = self.scripts.call(
            TAKE,
            **self._keys(),
            armed=keyspace.batch_armed(self.function),
            now=repr(now),
            lease_end=repr(now + self.lease),
            concurrency=str(limits.concurrency or ""),
            emission=repr(limits.emission or 0.0),
            size=str(size),
            token=token,
            park_list=queue_list,
            park_message=message,
            armed_ttl=keyspace.BATCH_ARMED_TTL,
            slack=repr(UNPARK_EVERY),
        )
        return int(places), float(turn) if turn else None

    def settle(self, token: str, places: int, used: int, ids: tuple[str, ...] = ()) -> None:
        """End the ``places`` taken under ``token``, ``used`` of them by items that
        started; a batch's items (``ids``, invocations) hold slots of their own from now."""
        now = time.time()
        keys = self._keys()
        del keys["rate_parked"]  # nothing is parked when places end
        self.scripts.call(
            SETTLE,
            **keys,
            now=repr(now),
            lease_end=repr(now + self.lease),
            places=str(places),
            used=str(used),
            token=token,
            emission=repr(self.manifest.limits.emission or 0.0),
            record_prefix=keyspace.record(""),
            ids=list(ids),
        )

    def _keys(self) -> dict[str, str]:
        limits = self.manifest.limits
        return limit_keys(
            self.function, limited=limits.concurrency is not None, rated=limits.rate is not None
        )
