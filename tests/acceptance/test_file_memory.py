"""A 500 MiB file through the real processes without being held: the API's memory while
it streams the upload into the file store, and the worker's pool child while it fetches
the file onto its disk for a handler that reads it a MiB at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    RedisServer,
    RssPeak,
    child_pids,
    free_port,
    start_api,
    start_worker,
    wait_for,
    write_function,
    write_settings,
)

pytestmark = pytest.mark.acceptance

SIZE = 500 * 1024 * 1024
PIECE = 1024 * 1024
BOUND = 32.0  # MiB

HASHER = """
    import hashlib
    from conveyor import File

    def run(f: File) -> str:
        digest = hashlib.sha256()
        with open(f, "rb") as source:
            while piece := source.read(1 << 20):
                digest.update(piece)
        return digest.hexdigest()
"""


def pieces() -> Iterator[bytes]:
    block = bytes(range(256)) * (PIECE // 256)
    for i in range(SIZE // PIECE):
        yield block[i % 256 :] + block[: i % 256]


def test_a_500_mib_file_is_streamed_not_held(tmp_path: Path, report: Callable[[str], None]) -> None:
    expected = hashlib.sha256()
    for piece in pieces():
        expected.update(piece)
    server = RedisServer(tmp_path / "redis").start()
    functions = tmp_path / "functions"
    write_function(
        functions,
        "hasher",
        HASHER,
        '[function]\nhandler = "handler:run"\n[limits]\ntimeout = 300\n',
    )
    config = write_settings(tmp_path / "deploy.toml", server.url, functions)
    api, base = start_api(config, tmp_path / "api.log", free_port())
    worker = start_worker(config, tmp_path / "worker.log", redis_client=server.client())
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            warm = client.post("/files", content=b"x" * PIECE)  # the path's first use
            assert warm.status_code == 201, warm.text
            with RssPeak(api.pid) as api_memory:
                made = client.post(
                    "/files", content=pieces(), headers={"Content-Type": "application/octet-stream"}
                )
            assert made.status_code == 201, made.text
            assert made.json()["size"] == SIZE
            assert made.json()["sha256"] == expected.hexdigest()

            [child] = wait_for(lambda: child_pids(worker.pid), 30, "the pool child")
            with RssPeak(child) as child_memory:
                done = client.post(
                    "/functions/hasher/invoke",
                    json={"input": made.json()["url"]},
                    params={"wait": 60},
                )
                while done.json()["status"] not in ("succeeded", "failed"):
                    done = client.get(done.json()["result_url"], params={"wait": 60})
            assert done.json()["output"] == expected.hexdigest(), done.text
        report(
            f"a 500 MiB upload moved the API's RSS by {api_memory.grew:.1f} MiB"
            f" (from {api_memory.before:.0f}); fetching it for the handler moved the pool"
            f" child's by {child_memory.grew:.1f} MiB (from {child_memory.before:.0f})"
        )
        assert api_memory.grew < BOUND and child_memory.grew < BOUND
    finally:
        worker.stop()
        api.stop()
        server.stop()
