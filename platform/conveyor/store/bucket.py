"""Large function bundles in the S3 bucket of the file store (``[files] store = "s3"`` and
``[files] bundles_above``): real model weights past what Redis should hold.

The bundle's object is ``bundles/<function>/<version>``; Redis keeps, in the bundle's
place, one chunk that names it (:data:`MARKER`), so everything that reads, keeps and
collects bundles goes on as it did, and a worker with the bucket's settings fetches the
object instead.
"""

from __future__ import annotations

from conveyor.errors import BundleError
from conveyor.files.blobs import S3Blobs
from conveyor.settings import Settings

MARKER = b"\x00conveyor:bundle-in-bucket:"


class BucketBundles:
    """Bundles over ``[files] bundles_above`` bytes, in the bucket."""

    def __init__(self, settings: Settings) -> None:
        self.above = settings.files.bundles_above
        self.blobs = S3Blobs(settings.files, prefix="bundles/")

    @classmethod
    def of(cls, settings: Settings) -> BucketBundles | None:
        files = settings.files
        return cls(settings) if files.store == "s3" and files.bundles_above else None

    def wanted(self, size: int) -> bool:
        return size > self.above

    def put(self, name: str, version: str, data: bytes) -> bytes:
        """Write the bundle's object: the chunk that stands for it in Redis."""
        writer = self.blobs.writer(f"{name}/{version}")
        try:
            for at in range(0, len(data), 8 * 1024 * 1024):
                writer.write(data[at : at + 8 * 1024 * 1024])
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return MARKER + f"{name}/{version}".encode()

    def get(self, marker: bytes) -> bytes:
        return self.blobs.read_all(marker.removeprefix(MARKER).decode())

    def delete(self, name: str, version: str) -> None:
        self.blobs.delete(f"{name}/{version}")


def in_bucket(chunks: list[bytes]) -> bytes | None:
    """The marker, if these chunks (a bundle as Redis holds it) stand for an object."""
    return chunks[0] if len(chunks) == 1 and chunks[0].startswith(MARKER) else None


def from_bucket(bucket: BucketBundles | None, marker: bytes) -> bytes:
    if bucket is None:
        raise BundleError(
            "this version's bundle is in the S3 bucket ([files] bundles_above): give this"
            ' process the same [files] settings (store = "s3", s3_endpoint, s3_bucket)'
        )
    return bucket.get(marker)
