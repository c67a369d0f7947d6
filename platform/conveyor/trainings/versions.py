"""The version a training makes: where it started, plus the files its handler wrote.

Runs in the worker's pool child after the handler returned. The new folder is checked as
a deploy is (its manifest, then an inspector subprocess imports it with the limits the API
uses), so a training whose files break the import fails with that error and nothing
changes; otherwise the bundle is stored and deployed (``promote``) or retained.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from conveyor.db.connections import pooled_client
from conveyor.errors import BundleError, FunctionLoadError, ManifestError
from conveyor.functions.inspector import Inspector, Limits
from conveyor.functions.manifest import MANIFEST_FILE, parse_manifest
from conveyor.functions.registry import FunctionSpec
from conveyor.log import get_logger
from conveyor.settings import Settings
from conveyor.store.bucket import BucketBundles
from conveyor.store.bundle import Bundle, pack
from conveyor.store.db import TRAINING, FunctionStore
from conveyor.store.deployer import store_version

log = get_logger(__name__)


@dataclass(frozen=True)
class Trained:
    version: str
    outcome: str  # deployed, unchanged (it serves already) or retained


def written_files(outputs: Path) -> list[Path]:
    """What the handler wrote, relative to ``outputs`` (links are refused: a version is
    its own files)."""
    found = []
    for path in sorted(outputs.rglob("*")):
        if path.is_symlink():
            raise FunctionLoadError(
                f"{path.relative_to(outputs)} in ctx.output_dir is a link; write the file itself"
            )
        if path.is_file():
            found.append(path.relative_to(outputs))
    return found


def make_version(
    settings: Settings,
    name: str,
    base: Path,
    outputs: Path,
    *,
    training_id: str,
    promote: bool,
) -> Trained:
    """Store the version ``base`` plus ``outputs`` (files of the same name replaced).
    :class:`FunctionLoadError` when it would not deploy: no files written, a manifest or
    import that fails, a bundle too large."""
    written = written_files(outputs)
    if not written:
        raise FunctionLoadError(
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
        try:
            bundle = pack(folder, settings.bundle_limit)
            manifest = parse_manifest(folder / MANIFEST_FILE, settings.queues)
        except (BundleError, ManifestError) as exc:
            raise FunctionLoadError(
                f"the new version would not deploy: {str(exc).replace(f'{staging}/', '')}"
            ) from None
        spec = FunctionSpec(name, bundle.version, folder, manifest)
        outcome = asyncio.run(_deploy(settings, spec, bundle, training_id, promote))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "training_version_stored",
        function=name,
        new_version=bundle.version,
        outcome=outcome,
        files_written=len(written),
    )
    return Trained(bundle.version, outcome)


async def _deploy(
    settings: Settings, spec: FunctionSpec, bundle: Bundle, training_id: str, promote: bool
) -> str:
    schemas = await Inspector(Limits.of(settings)).inspect(spec)
    client = pooled_client(settings)
    try:
        store = FunctionStore(client, BucketBundles.of(settings))
        return await store_version(
            store,
            spec,
            schemas,
            bundle,
            source=TRAINING,
            serve=promote,
            training=training_id,
        )
    finally:
        await client.aclose()
