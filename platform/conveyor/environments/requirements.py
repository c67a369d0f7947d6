"""The requirement lines of a function's environment, checked before anything resolves.

Only names with versions and markers (``numpy<2``, ``scipy==1.13.*; python_version>="3.11"``)
are taken: every package comes from the package index this machine's pip uses, so an
option (``--index-url``, ``-e``, ``-r``), a URL or a path is refused with the line named.
"""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from conveyor.errors import EnvironmentResolveError
from conveyor.functions.manifest import EnvironmentSection

MAX_LINES = 500


def requirement_lines(folder: Path, section: EnvironmentSection) -> list[str]:
    """The section's requirements (its file's lines, or its packages), each checked;
    EnvironmentResolveError naming the line that is not a plain requirement."""
    if section.packages is not None:
        where, lines = "[environment] packages", section.packages
    else:
        assert section.requirements is not None
        where = section.requirements
        try:
            lines = (folder / section.requirements).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise EnvironmentResolveError(f"{where}: cannot be read: {exc}") from None
    kept = []
    for number, raw in enumerate(lines, 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        kept.append(_checked(line, f"{where} line {number}" if section.packages is None else where))
    if len(kept) > MAX_LINES:
        raise EnvironmentResolveError(f"{where}: more than {MAX_LINES} requirements")
    return kept


def _checked(line: str, where: str) -> str:
    if line.startswith("-"):
        raise EnvironmentResolveError(
            f"{where}: {line!r}: options are not taken (packages come from this machine's"
            " package index); list requirements only, e.g. numpy<2"
        )
    try:
        requirement = Requirement(line)
    except InvalidRequirement as exc:
        raise EnvironmentResolveError(f"{where}: {line!r} is not a requirement: {exc}") from None
    if requirement.url:
        raise EnvironmentResolveError(
            f"{where}: {line!r}: a URL or path is not taken (packages come from this"
            " machine's package index); name a version instead"
        )
    return str(requirement)
