"""A worker on another machine: its own network namespace joined to ours by a veth pair,
reaching Redis at an address we create, with no functions folder at all.

It serves every function the API deploys, running the very version the API accepted
(fetched from the function store); after a folder breaks, a worker started afresh (an
empty version cache) still runs the last good version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from conveyor.api.app import create_app
from conveyor.settings import load_settings
from tests.support import (
    LOCAL,
    UV_CACHE,
    Process,
    RedisServer,
    conveyor,
    invoke,
    most_at_once,
    result,
    start_worker,
    until_reloaded,
    wait_for,
    write_function,
    write_settings,
)

pytestmark = pytest.mark.acceptance

HELLO = 'def run(x: str) -> str:\n    return "{answer} " + x\n'
HELLO_TOML = '[function]\nhandler = "handler:run"\n'


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _can_make_namespaces() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    return None


@pytest.fixture
def other_machine() -> Iterator[tuple[str, str, str]]:
    """A namespace and a veth pair: (namespace, our address, its address)."""
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"cv{tag}", f"cvh{tag}", f"cvn{tag}"
    subnet = f"10.{int(tag[:2], 16)}.{int(tag[2:4], 16)}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{subnet}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{subnet}.2/30", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, f"{subnet}.1", f"{subnet}.2"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_a_worker_with_no_functions_folder_serves_the_apis_versions(
    other_machine: tuple[str, str, str], tmp_path: Path, report: Callable[[str], None]
) -> None:
    ns, our_address, _ = other_machine
    server = RedisServer(tmp_path / "redis", bind=f"127.0.0.1 {our_address}").start(
        "--protected-mode", "no"
    )
    try:
        # This machine: the API, its functions folder.
        here = tmp_path / "here"
        write_function(here / "functions", "hello", HELLO.format(answer="hello"), HELLO_TOML)
        write_function(here / "functions", "greet", HELLO.format(answer="hi"), HELLO_TOML)
        config = write_settings(here / "deploy.toml", server.url, here / "functions")

        # The other machine: nothing but the Redis URL (at our veth address).
        there = tmp_path / "there"
        there.mkdir()
        remote_url = f"redis://{our_address}:{server.port}/0"
        remote_config = write_settings(there / "deploy.toml", remote_url, there / "functions")
        # Its loopback is its own: only the veth reaches our Redis.
        probe = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             f"import socket; socket.create_connection(('127.0.0.1', {server.port}), 2)"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert probe.returncode != 0 and "refused" in probe.stderr.lower()

        def remote_worker(log: str) -> Process:
            return Process(
                ["ip", "netns", "exec", ns, *conveyor("worker", "--name", "remote@other")],
                remote_config,
                there / log,
            )

        client = server.client()
        worker = remote_worker("worker.log")
        try:
            with TestClient(create_app(load_settings(config)), base_url=LOCAL, timeout=90) as api:
                wait_for(lambda: client.exists("conveyor:worker:remote@other"), 60, "worker")
                for name, answer in (("hello", "hello"), ("greet", "hi")):
                    listed = until_reloaded(api, name, lambda f: f.get("workers") == 1)
                    status, done = invoke(api, name, "world", wait=30)
                    assert status == 200 and done["output"] == f"{answer} world"
                    assert done["version"] == listed["version"] and "submitted_version" not in done
                assert not (there / "functions").exists()
                good = api.get("/functions/greet").json()["version"]

                # greet breaks on this machine; the other one is restarted with nothing cached.
                (here / "functions" / "greet" / "handler.py").write_text("def run(x: str) ->\n")
                broken = until_reloaded(api, "greet", lambda f: f["status"] == "error")
                assert broken["version"] == good and "SyntaxError" in broken["error"]
                worker.stop()
                shutil.rmtree(there / ".conveyor" / "cache")
                worker = remote_worker("worker-restarted.log")
                started = time.monotonic()
                status, done = invoke(api, "greet", "again", wait=60)
                assert status == 200, done
                assert done["output"] == "hi again" and done["version"] == good
                report(
                    "a restarted worker with an empty cache ran the last good greet"
                    f" {time.monotonic() - started:.2f} s after it was started"
                )

                # What the other machine ran is counted where the records live.
                metrics = api.get("/metrics").text
                assert (
                    'conveyor_invocations_total{function="hello",status="succeeded"} 1.0' in metrics
                )
                assert (
                    'conveyor_invocations_total{function="greet",status="succeeded"} 2.0' in metrics
                )
                assert 'conveyor_workers{queue="default"} 1.0' in metrics
        finally:
            worker.stop()
    finally:
        server.stop()


READ_AND_WRITE = """
    import hashlib
    from pathlib import Path
    from conveyor import File

    def run(f: File) -> dict:
        out = f.parent / "reversed.bin"
        out.write_bytes(f.read_bytes()[::-1])
        return {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "reversed": out}
"""


def test_a_worker_on_another_machine_reads_and_writes_files(
    other_machine: tuple[str, str, str], tmp_path: Path
) -> None:
    """The file store in Redis: a file uploaded to the API reaches a handler on another
    machine (which has nothing but the Redis URL), and the file it returns comes back."""
    ns, our_address, _ = other_machine
    server = RedisServer(tmp_path / "redis", bind=f"127.0.0.1 {our_address}").start(
        "--protected-mode", "no"
    )
    try:
        here = tmp_path / "here"
        write_function(here / "functions", "files", READ_AND_WRITE, HELLO_TOML)
        config = write_settings(here / "deploy.toml", server.url, here / "functions")
        there = tmp_path / "there"
        there.mkdir()
        remote_url = f"redis://{our_address}:{server.port}/0"
        remote_config = write_settings(there / "deploy.toml", remote_url, there / "functions")
        worker = Process(
            ["ip", "netns", "exec", ns, *conveyor("worker", "--name", "files@other")],
            remote_config,
            there / "worker.log",
        )
        client = server.client()
        try:
            with TestClient(create_app(load_settings(config)), base_url=LOCAL, timeout=90) as api:
                wait_for(lambda: client.exists("conveyor:worker:files@other"), 60, "worker")
                until_reloaded(api, "files", lambda f: f.get("workers") == 1)
                data = os.urandom(3 * 1024 * 1024)
                made = api.post("/files", content=data).json()
                status, done = invoke(api, "files", made["url"], wait=60)
                assert status == 200, done
                assert done["output"]["sha256"] == hashlib.sha256(data).hexdigest()
                assert api.get(done["output"]["reversed"]).content == data[::-1]
        finally:
            worker.stop()
    finally:
        server.stop()


LICENSED = """
    import os, time

    def run(seconds: float) -> int:
        begun = time.time()
        time.sleep(seconds)
        with open({log!r}, "a") as f:
            f.write(f"{{begun}} {{time.time()}}\\n")
        return os.getppid()  # the worker (one per machine) whose pool child ran it
"""


def test_concurrency_holds_across_two_machines(
    other_machine: tuple[str, str, str], tmp_path: Path, report: Callable[[str], None]
) -> None:
    """``[limits] concurrency = 2`` with a worker here and one on the other machine (3
    processes each): the handlers' own start and end times never overlap more than 2."""
    ns, our_address, _ = other_machine
    server = RedisServer(tmp_path / "redis", bind=f"127.0.0.1 {our_address}").start(
        "--protected-mode", "no"
    )
    try:
        here = tmp_path / "here"
        spans = tmp_path / "spans"
        write_function(
            here / "functions",
            "licensed",
            LICENSED.format(log=str(spans)),
            HELLO_TOML + "[limits]\nconcurrency = 2\n",
        )
        config = write_settings(here / "deploy.toml", server.url, here / "functions")
        there = tmp_path / "there"
        there.mkdir()
        remote_url = f"redis://{our_address}:{server.port}/0"
        remote_config = write_settings(there / "deploy.toml", remote_url, there / "functions")
        remote = Process(
            ["ip", "netns", "exec", ns, *conveyor("worker", "--name", "limited@other",
                                                  "--concurrency", "3")],
            remote_config,
            there / "worker.log",
        )  # fmt: skip
        client = server.client()
        local = start_worker(config, here / "worker.log", "--concurrency", "3", redis_client=client)
        try:
            with TestClient(create_app(load_settings(config)), base_url=LOCAL, timeout=90) as api:
                wait_for(lambda: client.exists("conveyor:worker:limited@other"), 60, "worker")
                until_reloaded(api, "licensed", lambda f: f.get("workers") == 2)
                ids = [invoke(api, "licensed", 0.3)[1]["id"] for _ in range(16)]
                done = [result(api, "licensed", i, wait=60) for i in ids]
        finally:
            remote.stop()
            local.stop()
        assert all(d["status"] == "succeeded" for d in done), done
        machines = {d["output"] for d in done}  # the workers that ran them
        held = [tuple(map(float, line.split())) for line in spans.read_text().splitlines()]
        peak = most_at_once(held)
        assert peak <= 2, held
        assert len(machines) == 2, machines  # both machines ran some
        report(
            f"concurrency = 2 over two machines (3 processes each): 16 invocations, peak {peak}"
            " at once, measured from the handlers' own start and end times"
        )
    finally:
        server.stop()


def _store_dirs(config: Path, cache: Path, uv_cache: Path) -> None:
    text = config.read_text().replace(f'uv_cache_dir = "{UV_CACHE}"\n', "")
    config.write_text(
        text.replace("[store]\n", f'[store]\ncache_dir = "{cache}"\nuv_cache_dir = "{uv_cache}"\n')
    )


ENV_VERSION = (
    "from importlib.metadata import version\n\ndef run(p: str) -> str:\n    return version(p)\n"
)


def test_a_worker_on_another_machine_builds_an_environment_from_the_stored_lock(
    other_machine: tuple[str, str, str], tmp_path: Path
) -> None:
    """A function with requirements.txt: the API resolves and builds it here; the other
    machine has no functions folder and no network beyond our Redis, so it builds the
    environment from the lock the function store holds, offline, from a uv cache that
    already holds its packages (as a machine image with a warm cache would)."""
    ns, our_address, _ = other_machine
    server = RedisServer(tmp_path / "redis", bind=f"127.0.0.1 {our_address}").start(
        "--protected-mode", "no"
    )
    uv_cache = tmp_path / "uv"
    try:
        here = tmp_path / "here"
        folder = write_function(here / "functions", "pinned", ENV_VERSION, HELLO_TOML)
        (folder / "requirements.txt").write_text("iniconfig==1.1.1\n")
        config = write_settings(
            here / "deploy.toml",
            server.url,
            here / "functions",
        )
        _store_dirs(config, here / "cache", uv_cache)
        there = tmp_path / "there"
        there.mkdir()
        remote_url = f"redis://{our_address}:{server.port}/0"
        remote_config = write_settings(
            there / "deploy.toml",
            remote_url,
            there / "functions",
        )
        _store_dirs(remote_config, there / "cache", uv_cache)
        with TestClient(create_app(load_settings(config)), base_url=LOCAL, timeout=90) as api:
            until_reloaded(api, "pinned", lambda f: f["status"] == "ready")
            environment = api.get("/functions/pinned").json()["environment"]
            worker = Process(
                ["ip", "netns", "exec", ns, *conveyor("worker", "--name", "envs@other")],
                remote_config,
                there / "worker.log",
            )
            try:
                status, done = invoke(api, "pinned", "iniconfig", wait=60)
                assert status == 200 and done["output"] == "1.1.1", done
            finally:
                worker.stop()
        log = (there / "worker.log").read_text()
        assert '"environment_built"' in log
        assert (there / "cache" / ".environments" / environment / ".conveyor-ready").is_file()
        assert not (there / "functions").exists()
    finally:
        server.stop()
