"""A training's end in the pool child: the version it made, handed to the API.

The folder of the version the training started from plus the files its handler wrote into
``ctx.output_dir`` (replacing files of the same name) is packed as a bundle, stored in the
file store, and the record handed over (:func:`conveyor.trainings.db.hand_over`): an API
process inspects it like any deploy and stores it. A worker never writes the function store
itself (``db/acl.py``: user code runs in this process).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from conveyor.errors import BundleError, TrainingError
from conveyor.store.bundle import pack


def written_files(outputs: Path) -> list[Path]:
    """What the handler wrote, relative to ``outputs``."""
    found = []
    for path in sorted(outputs.rglob("*")):
        if path.is_symlink():
            raise TrainingError(
                f"{path.relative_to(outputs)} in ctx.output_dir is a link; write the file itself"
            )
        if path.is_file():
            found.append(path.relative_to(outputs))
    return found


def new_version(name: str, base: Path, outputs: Path, limit: int) -> bytes:
    """The bundle of ``base`` plus ``outputs``; :class:`TrainingError` when there is none
    to make (nothing written, links, too large)."""
    written = written_files(outputs)
    if not written:
        raise TrainingError(
            "the training wrote no files into ctx.output_dir: there is no new version to make"
        )
    staging = Path(tempfile.mkdtemp(prefix="conveyor-trained-"))
    folder = staging / name
    try:
        shutil.copytree(base, folder, ignore=shutil.ignore_patterns("__pycache__"))
        for relative in written:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(outputs / relative, target)
        return pack(folder, limit).data
    except BundleError as exc:
        raise TrainingError(f"the new version cannot be packed: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
