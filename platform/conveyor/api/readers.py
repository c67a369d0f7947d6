"""How many long responses (file downloads, event streams) one API process holds open:
at most ``[api] max_open_responses`` in all and ``max_open_responses_per_key`` for one key
(429 beyond), so callers that open many and read slowly cost bounded memory and sockets.
Each response sends one chunk at a time (the transport's back-pressure waits for the
reader), so an open response holds at most a chunk."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from conveyor.errors import TooManyOpenError
from conveyor.settings import ApiSettings


@dataclass
class OpenResponses:
    """The long responses this process has open, in all and by key."""

    settings: ApiSettings
    by_key: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def hold(self, key: str | None, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body`` counted while it is sent; :class:`TooManyOpenError` if there is no
        room (nothing is held then)."""
        who = key or ""
        if self.total >= self.settings.max_open_responses:
            raise TooManyOpenError(
                f"this API process has {self.total} downloads and streams open ([api]"
                " max_open_responses): retry shortly"
            )
        if key and self.by_key[who] >= self.settings.max_open_responses_per_key:
            raise TooManyOpenError(
                f"this key has {self.by_key[who]} downloads and streams open on this API"
                " process ([api] max_open_responses_per_key): finish one first"
            )
        self.total += 1
        self.by_key[who] += 1
        return self._counted(who, body)

    async def _counted(self, who: str, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for piece in body:
                yield piece
        finally:
            self.total -= 1
            self.by_key[who] -= 1
            if self.by_key[who] <= 0:
                del self.by_key[who]
