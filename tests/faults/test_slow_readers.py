"""Readers that open many downloads and never read: each holds at most a chunk in the API
(one read at a time, sent with the transport's back-pressure), and the downloads and
streams one key, and one process, holds open are capped (429 beyond). Against the real API
process, on raw sockets that stall. Memory is reported, and bounded loosely."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Stack, free_port, make_key, start_api

pytestmark = pytest.mark.faults

PER_KEY, TOTAL = 12, 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def stalled(port: int, path: str, key: str, count: int) -> Iterator[list[bytes]]:
    """``count`` GETs that read their status line, then nothing more."""
    sockets, heads = [], []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
            )
            sock.sendall(request.encode())
            sockets.append(sock)
        for sock in sockets:
            sock.settimeout(10)
            heads.append(sock.recv(12))
        yield heads
    finally:
        for sock in sockets:
            sock.close()


def test_stalled_downloads_cost_a_chunk_each_and_are_capped(
    make_stack, report: Callable[[str], None]
) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    stack.set_settings("api", max_open_responses=TOTAL, max_open_responses_per_key=PER_KEY)
    alice = make_key(stack, "alice", "files:write")
    bob = make_key(stack, "bob", "files:write")
    port = free_port()
    proc, base = start_api(stack.config, stack.root / "api.log", port)
    try:
        made = httpx.post(
            f"{base}/files",
            content=b"x" * (16 * 1024 * 1024),
            headers={"Authorization": f"Bearer {alice}"},
            timeout=60,
        ).json()
        path = f"/files/{made['id']}"
        his = httpx.post(
            f"{base}/files",
            content=b"y" * (4 * 1024 * 1024),
            headers={"Authorization": f"Bearer {bob}"},
        ).json()
        time.sleep(0.5)
        before = rss_mib(proc.proc.pid)
        with stalled(port, path, alice, PER_KEY + 3) as heads:
            codes = [h[9:12] for h in heads]
            assert codes.count(b"200") == PER_KEY and codes.count(b"429") == 3, codes
            with stalled(port, f"/files/{his['id']}", bob, 10) as more:
                others = [h[9:12] for h in more]
                assert others.count(b"200") == TOTAL - PER_KEY, others  # the process's cap
                time.sleep(1)
                held = rss_mib(proc.proc.pid) - before
        time.sleep(0.5)
        again = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {alice}"}, timeout=30)
        assert again.status_code == 200 and len(again.content) == 16 * 1024 * 1024
    finally:
        proc.stop()
    report(
        f"{TOTAL} stalled downloads of a 16 MiB file held {held:.1f} MiB of API memory"
        f" ({held / TOTAL:.2f} MiB each); past the caps: 429"
    )
    assert held < TOTAL * 3, held  # a chunk each, give or take the allocator
