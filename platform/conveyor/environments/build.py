"""A lock built into a virtual environment, once per machine.

``<[store] cache_dir>/.environments/<id>/`` holds environment ``id``: a virtual environment
of this machine's Python with exactly the lock's packages (``uv pip sync``, hashes checked)
and the platform's own package linked in. It is complete when its ``.conveyor-ready``
marker exists; processes that meet a new id at once take a file lock (``<id>.flock``) and
the first builds while the others wait, then find it ready. uv's cache is ``[store]
uv_cache_dir`` (default ``<cache_dir>/.uv``, on the same disk: installs are hard links, so
environments that share a package share its files), and a build tries it offline first,
going to the index only for what it lacks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import conveyor
from conveyor.environments.resolve import index_options, run_uv, uv_binary
from conveyor.errors import EnvironmentResolveError
from conveyor.log import get_logger

log = get_logger(__name__)

READY = ".conveyor-ready"
PYCACHE = ".pycache"  # its processes' bytecode (PYTHONPYCACHEPREFIX)
# what a worker process imports (and the inspector): compiled once a build is done
WARM_MODULES = ("conveyor.cli.main", "conveyor.worker.process", "conveyor.functions.inspector")
LOCK_FILE = "conveyor.lock"
BUILD_TIMEOUT = 900.0  # seconds: a build that downloads large wheels


class Environments:
    """The environments built on this machine, under ``cache_dir``."""

    def __init__(self, cache_dir: Path, uv_cache: Path | None = None) -> None:
        self.root = cache_dir / ".environments"
        self.uv_cache = uv_cache or cache_dir / ".uv"

    def folder(self, environment_id: str) -> Path:
        return self.root / environment_id

    def python(self, environment_id: str) -> Path:
        return self.folder(environment_id) / "bin" / "python"

    def process_environ(self, environment_id: str, environ: Mapping[str, str]) -> dict[str, str]:
        """``environ`` for a process of the environment's interpreter: its bytecode is
        written as modules are first imported, into the environment's own folder (never
        into a function's), so the next process starts from it (uv installs no bytecode,
        and compiling all of it at build would cost more than the modules a worker uses)."""
        found = {k: v for k, v in environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {**found, "PYTHONPYCACHEPREFIX": str(self.folder(environment_id) / PYCACHE)}

    def ready(self, environment_id: str) -> bool:
        return (self.folder(environment_id) / READY).is_file()

    def ensure(self, environment_id: str, lock: str) -> Path:
        """The environment's interpreter, built from ``lock`` if this machine lacks it;
        EnvironmentResolveError naming what failed."""
        if self.ready(environment_id):
            return self.python(environment_id)
        with self._locked(environment_id):
            if not self.ready(environment_id):
                self._build(environment_id, lock)
        return self.python(environment_id)

    @contextlib.contextmanager
    def _locked(self, environment_id: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{environment_id}.flock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _build(self, environment_id: str, lock: str) -> None:
        began = time.monotonic()
        folder = self.folder(environment_id)
        shutil.rmtree(folder, ignore_errors=True)  # a build that died half-way
        self._uv("venv", str(folder), "--python", sys.executable, "--quiet")
        (folder / LOCK_FILE).write_text(lock)
        python = str(self.python(environment_id))
        sync = ["pip", "sync", str(folder / LOCK_FILE), "--python", python]
        sync += ["--link-mode", "hardlink", "--quiet", *index_options()]
        try:  # uv's cache is keyed by index: the same indexes, offline
            self._uv(*sync, "--offline")
        except EnvironmentResolveError:  # not all of it in uv's cache yet
            self._uv(*sync)
        _link_platform(folder)
        (folder / READY).write_text(f"{time.time()}\n")
        self._warm(environment_id)
        log.info(
            "environment_built",
            environment=environment_id,
            duration_ms=round((time.monotonic() - began) * 1000, 1),
        )

    def _warm(self, environment_id: str) -> None:
        """Import what a worker process imports, once, in the background: its bytecode is
        written while the version is inspected, so the environment's first worker process
        starts as fast as the platform's (its modules compiled already)."""
        subprocess.Popen(
            [str(self.python(environment_id)), "-c", f"import {', '.join(WARM_MODULES)}"],
            env=self.process_environ(environment_id, os.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _uv(self, *args: str) -> None:
        doing = "building the environment"
        done = run_uv([uv_binary(), *args], self.uv_cache, BUILD_TIMEOUT, doing)
        if done.returncode != 0:
            reason = " ".join(done.stderr.split())[-2000:]
            raise EnvironmentResolveError(f"the environment could not be built: {reason}")

    def remove(self, environment_id: str, older_than: float = 0.0) -> bool:
        """Forget a built environment (its last version was collected) that has been
        ready for ``older_than`` seconds: never one being built (the lock is held while it
        is, and the check is made under it). Whether it was removed."""
        with self._locked(environment_id):
            ready = self.folder(environment_id) / READY
            if not ready.is_file() or time.time() - ready.stat().st_mtime < older_than:
                return False
            shutil.rmtree(self.folder(environment_id), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / f"{environment_id}.flock")
        return True


def _link_platform(folder: Path) -> None:
    """The platform's package, linked into the environment's site-packages: a worker there
    imports it with the environment's (runtime-pinned) dependencies, not the platform's."""
    [site] = folder.glob("lib/python*/site-packages")
    (site / "conveyor").symlink_to(Path(conveyor.__file__).parent, target_is_directory=True)
