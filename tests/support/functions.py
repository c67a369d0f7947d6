"""Function folders, deploy.toml files and loaded functions for tests."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

from conveyor.errors import FunctionLoadError
from conveyor.functions.digest import folder_digest
from conveyor.functions.loader import LoadedFunction, load_function, version_schemas
from conveyor.functions.manifest import MANIFEST_FILE, parse_manifest
from conveyor.functions.registry import Change, FunctionEntry, Registry
from conveyor.settings import QueueSettings
from tests.support.processes import REPO, free_port

# uv's cache for functions' own environments, shared by every test stack (and CI run on this
# machine): each package is downloaded from the index once
UV_CACHE = Path(
    os.environ.get("CONVEYOR_TEST_UV_CACHE", Path(tempfile.gettempdir()) / "conveyor-uv")
)

QUEUES = {"realtime": QueueSettings(), "batch": QueueSettings(), "default": QueueSettings()}


def load(folder: Path) -> LoadedFunction:
    """A function folder's version, imported as a worker pool child imports it."""
    manifest = parse_manifest(folder / MANIFEST_FILE, QUEUES)
    return load_function(folder.name, folder_digest(folder), folder, manifest)


def importing_refresh(registry: Registry) -> list[Change]:
    """Rescan and check each new version by importing it here (what the API's inspector
    subprocess does), accepting it with its schemas or rejecting it with the error."""
    scan = registry.scan()
    changes = list(scan.changes)
    for spec in scan.candidates:
        try:
            schemas = version_schemas(spec.name, spec.version, spec.folder, spec.manifest)
        except FunctionLoadError as exc:
            change = registry.reject(spec, str(exc))
        else:
            change = registry.accept(spec, schemas)
        if change is not None:
            changes.append(change)
    return changes


def loaded_entries(root: Path) -> list[FunctionEntry]:
    """Every folder under ``root``, checked by importing it, as the API lists them."""
    registry = Registry(root, QUEUES)
    importing_refresh(registry)
    return registry.entries()


def write_settings(path: Path, redis_url: str, functions: Path, extra: str = "") -> Path:
    path.write_text(
        textwrap.dedent(f"""\
        [redis]
        url = "{redis_url}"
        data_dir = "{path.parent / "redis-data"}"
        [api]
        port = {free_port()}
        [functions]
        dir = "{functions}"
        [worker]
        restore_interval = 1.0
        heartbeat = 1.0
        [log]
        format = "json"
        [store]
        uv_cache_dir = "{UV_CACHE}"
        [queues.realtime]
        max_timeout = 60
        [queues.batch]
        [queues.default]
        """)
        + textwrap.dedent(extra)
    )
    return path


def write_function(root: Path, name: str, code: str, manifest: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(textwrap.dedent(code))
    (folder / "function.toml").write_text(textwrap.dedent(manifest))
    return folder


def write_pipeline(root: Path, name: str, manifest: str) -> Path:
    """A pipeline's folder: its function.toml alone."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "function.toml").write_text(manifest)
    return folder


RECORDING = """
    from conveyor import context

    def run(x: int) -> int:
        with open({runs!r}, "a") as f:
            f.write(context.current().id + "\\n")
        return x
"""


def write_recording_function(functions: Path, name: str, runs: Path, manifest: str = "") -> None:
    """A function that returns its input and appends each invocation's id to ``runs``."""
    code = RECORDING.format(runs=str(runs))
    write_function(functions, name, code, '[function]\nhandler = "handler:run"\n' + manifest)


def copy_examples(root: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(
            REPO / "functions" / name, root / name, ignore=shutil.ignore_patterns("__pycache__")
        )
