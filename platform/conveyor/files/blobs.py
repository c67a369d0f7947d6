"""Where a file's bytes live: Redis (chunks) or an S3-compatible bucket.

Both are written as a stream (:class:`BlobWriter`: ``write`` pieces of any size, then
``close`` or ``abort``) and read as a range, in pieces of about a MiB: a file is never held
whole by the API or a worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import redis
from redis.client import NEVER_DECODE

from conveyor.db import keyspace
from conveyor.settings import FilesSettings

CHUNK = 1024 * 1024 - 64  # as the function store's bundles: exactly a 1 MiB allocation
CHUNKS_PER_COMMAND = 4
PART = 8 * 1024 * 1024  # an S3 multipart upload's part (5 MiB at least, but the last)
READ = 1024 * 1024


class BlobWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Blobs(Protocol):
    name: str  # what a file's record says of where its bytes are

    def writer(self, file_id: str) -> BlobWriter: ...
    def read(self, file_id: str, start: int, end: int, ahead: int = ...) -> Iterator[bytes]: ...
    def delete(self, file_id: str) -> None: ...


class RedisBlobs:
    """Bytes as a list of :data:`CHUNK`-byte chunks, so a range reads only its chunks."""

    name = "redis"

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def writer(self, file_id: str) -> _RedisWriter:
        return _RedisWriter(self.redis, keyspace.file_data(file_id))

    def read(
        self, file_id: str, start: int, end: int, ahead: int = CHUNKS_PER_COMMAND
    ) -> Iterator[bytes]:
        """Bytes ``start`` to ``end``, ``ahead`` chunks a command (1: one chunk in hand, for
        a reader that may be slow)."""
        if end <= start:
            return
        key = keyspace.file_data(file_id)
        first, last = start // CHUNK, (end - 1) // CHUNK
        for at in range(first, last + 1, ahead):
            upto = min(at + ahead - 1, last)
            chunks = self.redis.execute_command(  # type: ignore[no-untyped-call]
                "LRANGE", key, at, upto, **{NEVER_DECODE: True}
            )
            if len(chunks) != upto - at + 1:
                raise FileNotFoundError(f"file {file_id}'s bytes are gone from Redis")
            for index, chunk in enumerate(chunks, start=at):
                offset = index * CHUNK
                yield chunk[max(start - offset, 0) : end - offset]

    def delete(self, file_id: str) -> None:
        self.redis.delete(keyspace.file_data(file_id))

    def records_and_heads(
        self, file_ids: list[str]
    ) -> dict[str, tuple[dict[str, str], list[bytes]]]:
        """Files' records and first chunks, in one round trip for them all (most inputs
        are this small): what :meth:`FileStore.fetch` reads first."""
        pipe = self.redis.pipeline(transaction=False)
        for file_id in file_ids:
            pipe.hgetall(keyspace.file(file_id))
            pipe.execute_command(  # type: ignore[no-untyped-call]
                "LRANGE",
                keyspace.file_data(file_id),
                0,
                CHUNKS_PER_COMMAND - 1,
                **{NEVER_DECODE: True},
            )
        found = pipe.execute()
        return {file_id: (found[2 * i], found[2 * i + 1]) for i, file_id in enumerate(file_ids)}


class _RedisWriter:
    def __init__(self, client: redis.Redis, key: str) -> None:
        self.redis, self.key = client, key
        self.buffer = bytearray()
        self.redis.delete(key)

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= CHUNK:  # a chunk at a time: at most two held
            self._push()

    def _push(self) -> None:
        with memoryview(self.buffer) as view:
            self.redis.rpush(self.key, bytes(view[:CHUNK]))
        del self.buffer[:CHUNK]

    def close(self) -> None:
        while self.buffer:
            self._push()

    def abort(self) -> None:
        self.buffer.clear()
        self.redis.delete(self.key)


class S3Blobs:
    """Bytes as one object per file (``files/<id>``) in ``[files] s3_bucket``, through
    boto3: any S3-compatible server. Large writes are multipart uploads of :data:`PART`."""

    name = "s3"

    def __init__(self, settings: FilesSettings, prefix: str = "files/") -> None:
        import boto3  # only a process that reaches S3 loads boto3 (about 60 MiB)

        options: dict[str, Any] = {"region_name": settings.s3_region}
        if settings.s3_endpoint:
            options["endpoint_url"] = settings.s3_endpoint
        if settings.s3_access_key_id:
            options["aws_access_key_id"] = settings.s3_access_key_id
            options["aws_secret_access_key"] = settings.s3_secret_access_key
        self.client = boto3.client("s3", **options)
        self.bucket = settings.s3_bucket
        self.prefix = prefix

    def key(self, file_id: str) -> str:
        return self.prefix + file_id

    def writer(self, file_id: str) -> _S3Writer:
        return _S3Writer(self.client, self.bucket, self.key(file_id))

    def read(
        self, file_id: str, start: int, end: int, ahead: int = CHUNKS_PER_COMMAND
    ) -> Iterator[bytes]:
        """Bytes ``start`` to ``end``, streamed a piece at a time whatever ``ahead`` says."""
        if end <= start:
            return
        answer = self.client.get_object(
            Bucket=self.bucket, Key=self.key(file_id), Range=f"bytes={start}-{end - 1}"
        )
        body = answer["Body"]
        try:
            yield from body.iter_chunks(READ)
        finally:
            body.close()

    def delete(self, file_id: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(file_id))

    def read_all(self, file_id: str) -> bytes:
        """An object whole (a function bundle, which is unpacked from memory anyway)."""
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(file_id))["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()


class _S3Writer:
    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= PART:
            self._part(bytes(self.buffer[:PART]))
            del self.buffer[:PART]

    def _part(self, data: bytes) -> None:
        if self.upload_id is None:
            answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self.upload_id = answer["UploadId"]
        number = len(self.parts) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.parts.append({"ETag": answer["ETag"], "PartNumber": number})

    def close(self) -> None:
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
        else:
            if self.buffer:
                self._part(bytes(self.buffer))
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        self.buffer.clear()

    def abort(self) -> None:
        self.buffer.clear()
        if self.upload_id is not None:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )
