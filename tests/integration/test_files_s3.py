"""The file store on an S3-compatible server (moto's, a process of its own speaking
HTTP): uploads, ranges, worker inputs and outputs, multipart uploads past one part, and
removal; Redis keeps only the records."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from tests.integration.test_files import MAKER, READER, TOML, upload
from tests.support import S3Server, Stack, invoke, wait_for, write_function

pytestmark = pytest.mark.integration


# A folder past [store] max_bundle_bytes (2 MiB here): its bundle goes to the bucket.
WEIGHTS = random.Random(0).randbytes(3 * 1024 * 1024)  # (zipped, still 3 MiB)
HEAVY = """
    import hashlib
    from pathlib import Path

    def run(x: int) -> str:
        return hashlib.sha256((Path(__file__).parent / "weights.bin").read_bytes()).hexdigest()
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(make_stack, s3: S3Server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    stack = make_stack(s3.settings() + "sweep_interval = 0.5\nbundles_above = 1048576\n")
    stack.set_settings("store", max_bundle_bytes=2 * 1024 * 1024)
    write_function(stack.functions, "reader", READER, TOML)
    write_function(stack.functions, "maker", MAKER, TOML)
    heavy = write_function(stack.functions, "heavy", HEAVY, TOML)
    (heavy / "weights.bin").write_bytes(WEIGHTS)
    stack.worker()
    yield stack


def test_files_live_in_the_bucket(api: TestClient, s3: S3Server, stack: Stack) -> None:  # type: ignore[type-arg]
    data = bytes(range(256)) * (20 * 4096 + 7)  # 21 MB: a multipart upload of three parts
    made = upload(api, data, filename="big.bin")
    assert f"files/{made['id']}" in s3.objects()
    assert not stack.redis.exists(f"conveyor:file-data:{made['id']}")
    assert stack.redis.hget(f"conveyor:file:{made['id']}", "store") == "s3"
    whole = api.get(made["url"])
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == made["sha256"]
    part = api.get(made["url"], headers={"Range": "bytes=8388600-8388700"})
    assert part.status_code == 206 and part.content == data[8388600:8388701]

    status, done = invoke(api, "reader", {"doc": made["url"]}, wait=60)
    assert status == 200, done
    assert done["output"]["doc"]["sha256"] == made["sha256"]

    status, done = invoke(api, "maker", 2, wait=60)
    assert status == 200, done
    [listed] = done["files"]
    assert f"files/{listed['id']}" in s3.objects()
    assert api.get(done["output"]["picture"]).content == bytes(range(256)) * 2

    assert api.delete(made["url"]).status_code == 204
    assert f"files/{made['id']}" not in s3.objects()
    assert api.get(made["url"]).status_code == 404


def test_expired_files_leave_the_bucket(api: TestClient, s3: S3Server, stack: Stack) -> None:  # type: ignore[type-arg]
    made = upload(api, b"short-lived")
    stack.redis.zadd("conveyor:files:expiry", {made["id"]: 0})
    stack.redis.hset(f"conveyor:file:{made['id']}", "expires_at", "0")
    assert api.get(made["url"]).status_code == 404
    wait_for(lambda: f"files/{made['id']}" not in s3.objects(), 15, "the sweep")
    assert not stack.redis.exists(f"conveyor:file:{made['id']}")


def test_a_large_bundle_lives_in_the_bucket(api: TestClient, s3: S3Server, stack: Stack) -> None:  # type: ignore[type-arg]
    version = api.get("/functions/heavy").json()["version"]
    assert f"bundles/heavy/{version}" in s3.objects()
    chunks = stack.redis.llen(f"conveyor:bundle:heavy:{version}")
    assert chunks == 1  # the chunk that names the object, not the 3 MiB
    status, done = invoke(api, "heavy", 1, wait=60)
    assert status == 200, done
    assert done["output"] == hashlib.sha256(WEIGHTS).hexdigest()
