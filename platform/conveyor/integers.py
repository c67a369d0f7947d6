"""One strict parser for the whole numbers that come in headers, query values, paths and
part names.

``str.isdigit()`` is true of ``"²"`` and ``"٣"``, which ``int()`` then refuses or reads,
and ``int()`` refuses 4,300 digits: each a 500 where a caller sent a bad value. Only ASCII
digits are a number here, and at most 18 of them (below 2**63, what Redis stores).
"""

from __future__ import annotations

import re

MAX_DIGITS = 18
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)


def whole_number(text: str | None) -> int | None:
    """``text`` as a non-negative integer, or None if it is anything else."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    return int(text)
