"""Files in the bench: the shapes classifier over uploaded pictures (batching on) against
the model's own batched speed, and a 10 MiB file from upload to result against the same
bytes passed through Redis by hand (SET, a Celery task that GETs them)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
PICTURES = 512
FILE_BYTES = 10 * 1024 * 1024


def draw_pictures(folder: Path, count: int = PICTURES) -> list[Path]:
    """``count`` PNG pictures of the shapes the example knows, drawn as its training was."""
    sys.path.insert(0, str(REPO / "functions" / "shapes"))
    try:
        from model import LABELS, draw  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.png"
        draw(LABELS[i % 3], rng).save(path)
        paths.append(path)
    return paths


def upload_all(base: str, paths: list[Path]) -> list[str]:
    with httpx.Client(base_url=base, timeout=60) as client:
        return [
            client.post("/files", content=p.read_bytes(), headers={"Content-Type": "image/png"})
            .raise_for_status()
            .json()["url"]
            for p in paths
        ]


def inprocess(folder: Path, batch: int) -> float:
    """Pictures/s of the model alone (bench/images_inprocess.py), reading the pictures
    from where a worker writes them (memory, /dev/shm, where there is one): the same
    file-system cost on both sides."""
    memory = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else None) as copy:
        for picture in folder.glob("*.png"):
            shutil.copy(picture, copy)
        done = subprocess.run(
            [sys.executable, "-m", "bench.images_inprocess", copy, str(batch)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rate"])


def file_bytes() -> bytes:
    return os.urandom(FILE_BYTES)


def upload_to_result(base: str, data: bytes) -> float:
    """Seconds from the upload's first byte to the hash of the file in the result."""
    start = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60) as client:
        made = client.post("/files", content=data).raise_for_status().json()
        done = client.post(
            "/functions/hashfile/invoke", json={"input": made["url"]}, params={"wait": 30}
        ).json()
    elapsed = time.perf_counter() - start
    assert done["output"] == hashlib.sha256(data).hexdigest(), done
    return elapsed


def by_hand(raw: Any, redis_url: str, data: bytes) -> float:
    """The same file through Redis by hand: SET, a task with the key, GET in the task."""
    client = redis.Redis.from_url(redis_url)
    key = f"bench:file:{uuid.uuid4().hex}"
    start = time.perf_counter()
    client.set(key, data, ex=300)
    digest = raw.hash_key.delay(key).get(timeout=30)
    elapsed = time.perf_counter() - start
    client.delete(key)
    assert digest == hashlib.sha256(data).hexdigest()
    return elapsed
