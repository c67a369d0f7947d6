"""Conveyor processes started as a user starts them, and waiting for what they do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent.parent


BIN = Path(sys.executable).parent


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started, as /proc lists them (none once it has exited)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cpu_ticks(pid: int) -> int:
    """User + system CPU of ``pid`` (all its threads) so far, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid: int) -> float:
    """A process's resident memory now, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"process {pid} shows no VmRSS")


class RssPeak:
    """The highest resident memory a process reaches while the block runs (sampled every
    10 ms in a thread), against what it had when the block began."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = rss_mib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(OSError, AssertionError):
                self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def grew(self) -> float:
        return self.peak - self.before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def wait_until(
    fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 20.0, what: str = ""
) -> Any:
    """Call ``fetch`` until ``done`` accepts its value; return that value."""
    found: list[Any] = []

    def check() -> bool:
        value = fetch()
        if done(value):
            found.append(value)
            return True
        return False

    wait_for(check, timeout, what)
    return found[0]


class Process:
    """A Conveyor command in its own process group, its output kept in a file."""

    def __init__(
        self,
        args: list[str],
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        full_env = {
            **os.environ,
            "CONVEYOR_CONFIG": str(config),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            args,
            env=full_env,
            cwd=cwd or config.parent,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a worker's parent and its pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        self.kill(signal.SIGKILL)  # strays of the group, if any
        self._out.close()


def conveyor(*args: str) -> list[str]:
    return [sys.executable, "-m", "conveyor", *args]


def start_worker(
    config: Path,
    log: Path,
    *args: str,
    redis_client: redis.Redis,
    env: dict[str, str] | None = None,
) -> Process:
    """Start ``conveyor worker`` and wait for its heartbeat (it is consuming)."""
    before = set(redis_client.keys("conveyor:worker:*"))
    proc = Process(conveyor("worker", *args), config, log, env)
    wait_for(
        lambda: (
            set(redis_client.keys("conveyor:worker:*")) - before or proc.proc.poll() is not None
        ),
        30,
        "worker heartbeat",
    )
    assert proc.proc.poll() is None, log.read_text()[-3000:]
    return proc


def start_api(
    config: Path, log: Path, port: int, env: dict[str, str] | None = None
) -> tuple[Process, str]:
    proc = Process(conveyor("api", "--port", str(port)), config, log, env)
    base = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(f"{base}/readyz").status_code == 200 or proc.proc.poll() is not None,
        30,
        "api readiness",
    )
    assert proc.proc.poll() is None, log.read_text()[-3000:]
    return proc, base


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most (start, end) spans open at one moment (handlers' own times, to check a
    concurrency limit)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most
