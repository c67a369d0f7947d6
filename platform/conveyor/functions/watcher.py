"""Hot reload: watchfiles events on the functions folder trigger a refresh.

The API watches from its event loop (:func:`watch_async`, refreshing its catalog, which
deploys what changed to the function store; workers follow the store, not a folder). It
debounces briefly so that a folder copied in file by file is read once it is complete,
well within a second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import watchfiles

from conveyor.log import get_logger

log = get_logger(__name__)

DEBOUNCE_MS = 150
STEP_MS = 30


def _relevant(change: watchfiles.Change, path: str) -> bool:
    return "__pycache__" not in path and not path.endswith((".pyc", ".swp", "~"))


async def watch_async(root: Path, refresh: Callable[[], Awaitable[None]]) -> None:
    """Await ``refresh()`` after every change under ``root``, until cancelled."""
    root.mkdir(parents=True, exist_ok=True)
    async for _ in watchfiles.awatch(
        root, watch_filter=_relevant, debounce=DEBOUNCE_MS, step=STEP_MS
    ):
        try:
            await refresh()
        except Exception:  # a folder vanishing mid-scan must not end hot reload
            log.exception("function_refresh_failed")
