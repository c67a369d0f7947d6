"""A worker on another machine: its own network namespace joined to ours by a veth pair,
reaching Redis at an address we create, with its own copy of the functions folder.

It serves invocations the API accepts; when its copy of a function differs from the
API's, the result says which version ran (``version``) and which was submitted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from conveyor.api.app import create_app
from conveyor.settings import load_settings
from support import (
    Process,
    RedisServer,
    conveyor,
    invoke,
    result,
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


def test_worker_in_another_namespace_serves_and_reports_its_version(
    other_machine: tuple[str, str, str], tmp_path: Path
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

        # The other machine: the same folder (a copy), Redis at our veth address.
        there = tmp_path / "there"
        shutil.copytree(here / "functions", there / "functions")
        # ... but not quite: its greet is another version than ours.
        (there / "functions" / "greet" / "handler.py").write_text(HELLO.format(answer="bonjour"))
        remote_url = f"redis://{our_address}:{server.port}/0"
        remote_config = write_settings(there / "deploy.toml", remote_url, there / "functions")
        # Its loopback is its own: only the veth reaches our Redis.
        probe = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             f"import socket; socket.create_connection(('127.0.0.1', {server.port}), 2)"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert probe.returncode != 0 and "refused" in probe.stderr.lower()

        worker = Process(
            ["ip", "netns", "exec", ns, *conveyor("worker", "--name", "remote@other")],
            remote_config,
            there / "worker.log",
        )
        try:
            client = server.client()
            wait_for(lambda: client.exists("conveyor:worker:remote@other"), 60, "remote worker")
            with TestClient(create_app(load_settings(config)), timeout=90) as api:
                listed = until_reloaded(api, "hello", lambda f: f.get("workers") == 1)
                same = listed["version"]
                status, done = invoke(api, "hello", "world", wait=30)
                assert status == 200 and done["output"] == "hello world"
                assert done["version"] == same and "submitted_version" not in done

                ours = api.get("/functions/greet").json()["version"]
                _, accepted = invoke(api, "greet", "world")
                assert accepted["version"] == ours
                ran = result(api, "greet", accepted["id"], wait=30)
                assert ran["status"] == "succeeded" and ran["output"] == "bonjour world"
                assert ran["version"] != ours and ran["submitted_version"] == ours

                # What the other machine ran is counted where the records live.
                metrics = api.get("/metrics").text
                assert (
                    'conveyor_invocations_total{function="hello",status="succeeded"} 1.0' in metrics
                )
                assert (
                    'conveyor_invocations_total{function="greet",status="succeeded"} 1.0' in metrics
                )
                assert 'conveyor_workers{queue="default"} 1.0' in metrics
        finally:
            worker.stop()
    finally:
        server.stop()
