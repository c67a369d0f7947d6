"""An attempt's checkpoints: its ``ctx.checkpoint_dir`` saved to the file store, and
restored into the next attempt of the same invocation (see :mod:`conveyor.checkpoints`).

The directory is packed as a tar archive (not compressed: weights and optimiser state do
not compress, and the time is the handler's), stored as one file of the file store, and
the record pointed at it; the previous checkpoint's file is removed once the new one is
in place, so a worker killed mid-save leaves the last complete checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from conveyor.checkpoints.db import Checkpoints
from conveyor.errors import CheckpointError
from conveyor.log import get_logger
from conveyor.worker.files import WorkerFiles

log = get_logger(__name__)


class AttemptCheckpoints:
    """One attempt's checkpoint directory (made when first asked for)."""

    def __init__(
        self,
        files: WorkerFiles,
        checkpoints: Checkpoints,
        invocation_id: str,
        attempt: int,
        *,
        limit: int,
        ttl: float,
    ) -> None:
        self.files = files
        self.checkpoints = checkpoints
        self.id = invocation_id
        self.attempt = attempt
        self.limit = limit
        self.ttl = ttl
        self._directory: Path | None = None
        self._resumed = False

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = Path(
                tempfile.mkdtemp(prefix="conveyor-checkpoint-", dir=self.files.disk)
            )
        return self._directory

    @property
    def resumed(self) -> bool:
        return self._resumed

    def restore(self) -> None:
        """Put the invocation's last checkpoint into the directory (a later attempt's
        first step, when an earlier one saved any)."""
        if self.attempt <= 1:
            return
        saved = self.checkpoints.last(self.id)
        if saved is None:
            return
        started = time.monotonic()
        archive = self.directory.with_suffix(".tar")
        fetched = self.files.store.fetch(saved.file, lambda _: archive)
        if fetched is None:
            log.warning("checkpoint_missing", file=saved.file)
            return
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(self.directory, filter="data")
        finally:
            archive.unlink(missing_ok=True)
        self._resumed = True
        log.info(
            "checkpoint_restored",
            bytes=saved.bytes,
            saved_by_attempt=saved.attempt,
            age_s=round(time.time() - saved.at, 3),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def save(self) -> None:
        """Store the directory as this invocation's checkpoint."""
        started = time.monotonic()
        directory = self.directory
        handle, name = tempfile.mkstemp(
            prefix="conveyor-checkpoint-", suffix=".tar", dir=self.files.disk
        )
        os.close(handle)
        archive = Path(name)
        try:
            size = self._pack(directory, archive)
            meta = self.files.store.put_path(
                archive,
                kind="checkpoint",
                owner=None,
                ttl=self.ttl,
                content_type="application/x-tar",
            )
        finally:
            archive.unlink(missing_ok=True)
        replaced = self.checkpoints.save(self.id, self.attempt, meta.id, size)
        if replaced is None:  # this attempt was cancelled or ended meanwhile
            self.files.store.remove(meta.id)
            log.info("checkpoint_discarded", reason="the attempt no longer runs")
            return
        if replaced:
            self.files.store.remove(replaced)
        log.info(
            "checkpoint_saved",
            bytes=size,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _pack(self, directory: Path, archive: Path) -> int:
        total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        if total > self.limit:
            raise CheckpointError(
                f"the checkpoint directory holds {total} bytes, more than [limits]"
                f" max_checkpoint_bytes ({self.limit}); save less, or raise the limit"
            )
        with tarfile.open(archive, "w") as tar:
            for path in sorted(directory.iterdir()):
                tar.add(path, arcname=path.name)
        size = archive.stat().st_size
        if size > self.limit + 1024 * 1024:  # tar's headers and padding, beyond the files
            raise CheckpointError(
                f"the checkpoint came to {size} bytes, more than [limits] max_checkpoint_bytes"
                f" ({self.limit})"
            )
        return size

    def cleanup(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
