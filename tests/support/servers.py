"""Real servers for tests: a private redis-server, Sentinels over a primary and a replica,
and an S3-compatible object store."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import redis

from tests.support.processes import free_port, wait_for


class RedisServer:
    """A private redis-server on a free port, started and stopped by the test session."""

    def __init__(
        self, workdir: Path, port: int | None = None, bind: str = "127.0.0.1", password: str = ""
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.bind = bind
        self.password = password  # the default user's (requirepass), if any
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        secret = f":{self.password}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> RedisServer:
        """Start (or restart, on the same port and directory) with ``extra`` arguments."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra = extra or getattr(self, "extra", ())
        extra = self.extra
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                *self.bind.split(),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.client().ping(), 10, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password or None, decode_responses=True)

    def in_sync(self) -> bool:
        """A replica that has loaded its first copy (one promoted before that is empty)."""
        return self.client().info("replication").get("master_link_status") == "up"

    def replicate(self, primary: RedisServer, *extra: str) -> RedisServer:
        """Start as ``primary``'s replica, and wait for its first copy."""
        self.start(*extra, "--replicaof", "127.0.0.1", str(primary.port))
        wait_for(self.in_sync, 20, "the replica's first copy")
        return self


class Sentinels:
    """A Redis primary, one replica and three sentinels watching them as ``conveyor``, on
    free loopback ports (redis-server in sentinel mode: Debian's redis-sentinel is the same
    program). A primary is declared down after ``down_after_ms`` without an answer."""

    MASTER = "conveyor"

    def __init__(self, workdir: Path, down_after_ms: int = 1000) -> None:
        self.workdir = workdir
        self.down_after_ms = down_after_ms
        self.persistence = (
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--repl-diskless-sync-delay", "0",  # (5 s by default: to wait for more replicas)
        )  # fmt: skip
        self.primary = RedisServer(workdir / "primary").start(*self.persistence)
        self.replica = RedisServer(workdir / "replica").replicate(self.primary, *self.persistence)
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            self.procs.append(self._sentinel(port))
        wait_for(self._ready, 20, "three sentinels that see the replica and each other")

    def _sentinel(self, port: int) -> subprocess.Popen[bytes]:
        folder = self.workdir / f"sentinel-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"  # sentinel rewrites its file: one each
        conf.write_text(
            textwrap.dedent(f"""\
            port {port}
            bind 127.0.0.1
            dir {folder}
            sentinel monitor {self.MASTER} 127.0.0.1 {self.primary.port} 2
            sentinel down-after-milliseconds {self.MASTER} {self.down_after_ms}
            sentinel failover-timeout {self.MASTER} 5000
            sentinel parallel-syncs {self.MASTER} 1
            """)
        )
        return subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _ready(self) -> bool:
        if not self.replica.in_sync():
            return False
        for port in self.ports:
            info = redis.Redis(port=port, decode_responses=True).sentinel_master(self.MASTER)
            if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                return False
        return True

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def settings(self) -> str:
        """The deploy.toml lines that point the platform at these sentinels."""
        listed = ", ".join(f'"{a}"' for a in self.addresses)
        return f'sentinels = [{listed}]\nmaster_name = "{self.MASTER}"\n'

    def current_primary_port(self) -> int:
        host_port = redis.Redis(port=self.ports[0]).sentinel_get_master_addr_by_name(self.MASTER)
        return int(host_port[1])

    def kill_primary(self) -> RedisServer:
        """SIGKILL whichever server is the primary now; returns it."""
        port = self.current_primary_port()
        server = self.primary if self.primary.port == port else self.replica
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(10)
        server.proc = None
        return server

    def restart(self, server: RedisServer) -> None:
        """Start a killed server again as the current primary's replica, as an operator's
        restart must (README "Redis Sentinel"): started as the primary it was, it would
        take writes until the sentinels demote it, and lose them to the resync then."""
        wait_for(lambda: self.current_primary_port() != server.port, 60, "the failover")
        primary = self.current_primary_port()
        server.start(*self.persistence, "--replicaof", "127.0.0.1", str(primary))

    def client(self) -> redis.Redis:
        """A client of the current primary."""
        return redis.Redis(port=self.current_primary_port(), decode_responses=True)

    def healthy(self) -> bool:
        """Whichever server is primary has an online replica (after a failover: once the
        killed server is back and the sentinels made it one)."""
        try:
            replication = self.client().info("replication")
        except (redis.RedisError, OSError):
            return False
        replica = replication.get("slave0")
        return isinstance(replica, dict) and replica.get("state") == "online"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(10)
        self.primary.stop()
        self.replica.stop()


class S3Server:
    """An S3-compatible server in its own process, speaking HTTP on loopback: moto's
    standalone server (``moto_server``), with one bucket made for the tests."""

    def __init__(self, workdir: Path, bucket: str = "conveyor-files") -> None:
        self.port = free_port()
        self.bucket = bucket
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = (workdir / "s3.log").open("wb")
        server = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        self.client().create_bucket(Bucket=bucket)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> str:
        """deploy.toml's [files] table for this server."""
        return (
            f'[files]\nstore = "s3"\ns3_endpoint = "{self.endpoint}"\ns3_bucket = "{self.bucket}"\n'
            's3_access_key_id = "test"\ns3_secret_access_key = "test"\n'
        )

    def client(self) -> Any:
        import boto3  # only the tests that use S3 pay for importing it

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def objects(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
