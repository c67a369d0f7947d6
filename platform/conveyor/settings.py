"""Platform settings: deploy.toml, overridden key by key by ``CONVEYOR_<SECTION>__<KEY>``.

``CONVEYOR_CONFIG`` names another file. Settings are built by :func:`load_settings` (tests
call it with an explicit path) or read once per process through :func:`get_settings`; never
at import time.
"""

from __future__ import annotations

import binascii
import os
import re
import tomllib
from base64 import b64decode
from functools import lru_cache
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from conveyor.errors import SettingsError
from conveyor.log import LogFormat
from conveyor.nesting import DEFAULT_DEPTH

CONFIG_ENV = "CONVEYOR_CONFIG"
DEFAULT_CONFIG = "deploy.toml"
QUEUE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
GPU_QUEUE_SUFFIX = ".gpu"  # a queue name cannot contain a dot, so this never collides
WEBHOOK_SECRET_PREFIX = "whsec_"
LOOPBACK_NAMES = ("localhost",)

Seconds = Annotated[float, Field(gt=0)]


def _cidrs(value: list[str]) -> list[str]:
    """``allow_networks``: each a network (CIDR), or the error names it."""
    for network in value:
        try:
            ip_network(network, strict=False)
        except ValueError as exc:
            raise ValueError(f"{network!r}: {exc}") from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6390/0"
    # Redis Sentinel: with sentinels, every process asks them for the current primary of
    # master_name (and asks again after a failover); url is then not used.
    sentinels: list[str] = Field(
        default_factory=list, description='"host:port" of each sentinel; replaces url'
    )
    master_name: str = Field("conveyor", min_length=1, description="the sentinels' name for it")
    password: str = Field("", description="the primary's and replicas' password, with sentinels")
    username: str = Field("", description="the ACL user to connect as, with sentinels")
    # Workers run user code: with these, they reach Redis as a user whose ACL allows no API
    # keys and no writes to the function store (`conveyor redis --acl` prints its rules).
    worker_username: str = Field("", description="the Redis ACL user workers connect as")
    worker_password: str = Field("", description="its password")
    sentinel_password: str = Field("", description="the sentinels' own password, if they have one")
    db: int = Field(0, ge=0, le=15, description="the database number, with sentinels")
    data_dir: Path = Field(Path(".conveyor/redis"), description="where `conveyor redis` persists")
    connect_timeout: Seconds = 2.0
    socket_timeout: Seconds = 10.0
    # Past this much memory in Redis, new invocations, trainings and map jobs get 503 (what
    # was accepted still runs): before Redis's own maxmemory makes every write fail.
    max_memory_bytes: int | None = Field(
        None, gt=0, description="a cap on Redis's used_memory for new work"
    )
    max_memory_fraction: float | None = Field(
        None, gt=0, le=1, description="the cap as a fraction of Redis's maxmemory"
    )
    max_connections: int = Field(
        64, ge=1, le=10_000, description="per API process; more requests wait for one"
    )
    # Acknowledged means replicated: a 202 (and a worker's acknowledgement of its message)
    # waits for this many replicas to confirm the write (Redis's WAIT).
    min_replicas: int = Field(
        0, ge=0, le=16, description="replicas that must hold a submit before its 202"
    )
    replica_timeout: Seconds = Field(
        1.0, le=60, description="seconds to wait for them; then 503 and the submit withdrawn"
    )

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f'{entry!r}: each sentinel is "host:port", e.g. "10.0.0.5:26379"')
        return value

    @model_validator(mode="after")
    def _worker_credentials(self) -> RedisSettings:
        if bool(self.worker_username) != bool(self.worker_password):
            raise ValueError("worker_username and worker_password go together")
        if self.worker_username and not re.match(r"^[A-Za-z0-9_.-]{1,64}$", self.worker_username):
            raise ValueError("worker_username: letters, digits, _ . - (up to 64)")
        return self

    @model_validator(mode="after")
    def _wait_within_socket_timeout(self) -> RedisSettings:
        if self.min_replicas and self.replica_timeout >= self.socket_timeout:
            raise ValueError(
                f"replica_timeout ({self.replica_timeout:g}) must be shorter than"
                f" socket_timeout ({self.socket_timeout:g}): WAIT blocks the connection"
            )
        return self

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(h.strip("[]"), int(p)) for h, _, p in (e.rpartition(":") for e in self.sentinels)]


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes sharing the port (uvicorn restarts any that dies)",
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_wait: Seconds = Field(60.0, le=600)
    max_json_depth: int = Field(
        DEFAULT_DEPTH,
        ge=2,
        le=256,
        description="levels of nesting any JSON the API takes may have (bodies, items,"
        " inputs); deeper is a 400 before anything validates it",
    )
    auth: Literal["keys", "none"] = Field(
        "none", description='"keys": every request needs an API key; "none": loopback only'
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description='Host names served besides localhost, 127.0.0.1 and [::1] (auth = "none")',
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins (https://app.example.com) whose pages may call the API",
    )
    public_url: str = Field(
        "",
        description="the API's address as clients reach it (https://api.example.com): file"
        " URLs in results are built on it; empty: the request's own base URL",
    )
    max_open_responses: int = Field(
        1024,
        ge=1,
        description="downloads (GET /files) and event streams one API process holds open at"
        " once (429 beyond)",
    )
    max_open_responses_per_key: int = Field(
        32, ge=1, description="... of them for one API key, on one API process"
    )
    stream_heartbeat: Seconds = Field(
        15.0,
        gt=0,
        le=300,
        description="seconds between the comments an idle event stream sends to keep"
        " proxies from closing it",
    )

    def files_base(self) -> str:
        """Where clients reach the API, for URLs sent outside a request (webhooks)."""
        if self.public_url:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s]+$", value):
            raise ValueError(f"{value!r}: public_url is http(s)://host[:port][/path]")
        return value.rstrip("/")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"{origin!r}: an origin is scheme://host[:port], no path")
        return value


class WebhookSettings(_Section):
    secret: str = Field(
        "", description="whsec_... signing secrets, space-separated (all sign, for rotation)"
    )
    max_age: Seconds = Field(24 * 3600.0, description="seconds a delivery is retried for")
    timeout: Seconds = Field(10.0, le=300, description="seconds one delivery attempt may take")
    allow_networks: list[str] = Field(
        default_factory=list, description="CIDRs the SSRF guard lets through (e.g. 127.0.0.0/8)"
    )
    concurrency: int = Field(64, ge=1, le=4096, description="deliveries at once per process")
    per_host: int = Field(4, ge=1, le=1024, description="deliveries at once to one host")
    retry_schedule: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0],
        min_length=1,
        description="seconds before each retry; the last repeats until max_age",
    )

    @field_validator("secret")
    @classmethod
    def _secrets(cls, value: str) -> str:
        for secret in value.split():
            body = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
            try:
                ok = secret.startswith(WEBHOOK_SECRET_PREFIX) and len(b64decode(body)) >= 24
            except (ValueError, binascii.Error):
                ok = False
            if not ok:
                raise ValueError(
                    "each secret is whsec_ + base64 of at least 24 random bytes;"
                    " `conveyor webhooks secret` makes one"
                )
        return value

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _cidrs(value)

    @property
    def secrets(self) -> list[str]:
        return self.secret.split()


class FunctionsSettings(_Section):
    dir: Path = Path("functions")
    watch: bool = True
    inspect_timeout: Seconds = Field(
        60.0, le=3600, description="seconds the API's inspector may take to import a handler"
    )
    inspect_memory: int = Field(
        4096, ge=64, description="MiB of memory the inspector may allocate importing a handler"
    )


class StoreSettings(_Section):
    max_bundle_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=512 * 1024 * 1024,
        description="a function folder's files, together, at most (its bundle lives in Redis)",
    )
    keep_versions: int = Field(
        10, ge=1, le=1000, description="versions of each function kept (in use: always)"
    )
    collect_interval: Seconds = Field(
        60.0, le=24 * 3600, description="seconds between looks for versions past keep_versions"
    )
    cache_dir: Path = Field(
        Path(".conveyor/cache"),
        description="where a worker unpacks the versions it runs, and builds functions' own"
        " environments (.environments/<id>)",
    )
    uv_cache_dir: Path | None = Field(
        None,
        description="uv's package cache for those environments (default: <cache_dir>/.uv;"
        " on the same disk, so installs are hard links)",
    )


class FilesSettings(_Section):
    store: Literal["redis", "s3"] = Field(
        "redis", description='where file bytes live: "redis" (chunks) or "s3" (a bucket)'
    )
    max_bytes: int = Field(1024 * 1024 * 1024, ge=1024, description="one file, at most (1 GiB)")
    max_request_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="the files of one request (its uploads, data URIs and URLs) in all, at"
        " most (1 GiB)",
    )
    upload_ttl: Seconds = Field(
        24 * 3600.0, description="seconds an upload stays (while an invocation uses it: longer)"
    )
    allow_networks: list[str] = Field(
        default_factory=list,
        description="networks URL inputs may be fetched from though the SSRF guard refuses"
        " them (loopback, private ...)",
    )
    fetch_timeout: Seconds = Field(30.0, le=3600, description="seconds one URL input may take")
    sweep_interval: Seconds = Field(
        30.0, le=3600, description="seconds between looks for expired files"
    )
    s3_endpoint: str = Field("", description="an S3-compatible endpoint; empty: AWS's")
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = Field("", description="empty: boto3's own chain (AWS_* ...)")
    s3_secret_access_key: str = ""
    bundles_above: int = Field(
        0,
        ge=0,
        description='with store = "s3": function bundles larger than this many bytes go to the'
        " bucket (0: none do), and a version may then have up to max_bytes",
    )

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _cidrs(value)


class QueueSettings(_Section):
    description: str = ""
    max_timeout: Seconds = Field(3600.0, description="longest hard limit a function may declare")


class WorkerSettings(_Section):
    concurrency: int = Field(1, ge=1, le=256)
    visibility_timeout: Seconds = Field(
        20.0,
        description="seconds before what a vanished worker held (messages, batch items) is"
        " delivered again; a live worker re-stamps what it holds every third of it, so a"
        " long run is never handed to a second worker",
    )
    restore_interval: Seconds = 5.0
    stall_after: Seconds = Field(
        30.0,
        description="seconds a worker's consumer may take no message while its queues hold"
        " some and it has room (Redis reachable), or its heartbeat not beat, before the"
        " worker starts itself afresh (what it held is redelivered)",
    )
    start_timeout: Seconds = Field(300.0, description="time a process may take in setup()")
    heartbeat: Seconds = 5.0
    slot_lease: Seconds = Field(
        30.0,
        description="[limits] concurrency: seconds a running attempt's slot is held between"
        " its worker's renewals; a vanished worker's slot is free this long after",
    )
    shutdown_grace: Seconds = Field(
        30.0,
        description="on SIGTERM: seconds a running handler has (ctx.stopping is true, a"
        " checkpoint ends it) before its attempt is stopped and queued again",
    )
    scale_interval: Seconds = Field(1.0, description="--autoscale: seconds between looks")
    scale_down_after: Seconds = Field(
        30.0, description="--autoscale: seconds a queue stays empty before a process stops"
    )
    hidden_env: list[str] = Field(
        default_factory=list,
        description="environment variables (names or fnmatch patterns) user code must not"
        " see, besides the platform's own secrets (CONVEYOR_*PASSWORD*, ...)",
    )
    scratch_dir: Path | None = Field(
        None,
        description="where an attempt's input files are written (unset: the system's temp"
        " folder, and /dev/shm for files up to 1 MiB where it exists)",
    )


class ResultsSettings(_Section):
    pending_ttl: int = Field(7 * 24 * 3600, gt=0, description="seconds a record may wait")


class MapSettings(_Section):
    max_items: int = Field(1_000_000, ge=1, description="items one map job may have")
    max_body_bytes: int = Field(
        1024**3,
        gt=0,
        description="a map request's body, streamed: the API holds at most 4 MiB of items"
        " and the one being read; the items themselves wait in Redis",
    )
    chunk_seconds: Seconds = Field(
        0.05,
        le=60,
        description="the work one chunk of items aims at: a single invocation"
        " waits behind at most one running chunk per busy process",
    )
    max_chunk: int = Field(1024, ge=1, le=5000, description="items in one chunk at most")
    window: int = Field(
        2, ge=1, le=64, description="chunks of one job queued or running per worker process"
    )


class PipelinesSettings(_Section):
    max_fanout: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="elements one for_each step may have: a run whose list is longer fails"
        " (refused with 422 when the list is in the input)",
    )
    window: int = Field(
        128,
        ge=1,
        le=1024,
        description="elements of a for_each step over a streaming function or a pipeline"
        " under way at once (each is an invocation or a run; the next starts as one ends)",
    )


class MetricsSettings(_Section):
    enabled: bool = Field(
        True, description="count invocations for /metrics and the dashboard (workers and API)"
    )


class LogSettings(_Section):
    level: str = "info"
    format: LogFormat = "auto"


class Settings(BaseSettings):
    """Everything a Conveyor process needs to know about its deployment."""

    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    redis: RedisSettings = RedisSettings()
    api: ApiSettings = ApiSettings()
    functions: FunctionsSettings = FunctionsSettings()
    worker: WorkerSettings = WorkerSettings()
    results: ResultsSettings = ResultsSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    map: MapSettings = MapSettings()
    pipelines: PipelinesSettings = PipelinesSettings()
    webhooks: WebhookSettings = WebhookSettings()
    store: StoreSettings = StoreSettings()
    files: FilesSettings = FilesSettings()
    queues: dict[str, QueueSettings] = Field(
        default_factory=lambda: {"default": QueueSettings()}, min_length=1
    )

    @property
    def bundle_limit(self) -> int:
        """The most a version's files may add up to: ``[store] max_bundle_bytes``, or with
        large bundles in the bucket (``[files] bundles_above``), ``[files] max_bytes``."""
        files = self.files
        if files.store == "s3" and files.bundles_above:
            return max(files.max_bytes, self.store.max_bundle_bytes)
        return self.store.max_bundle_bytes

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: dict[str, QueueSettings]) -> dict[str, QueueSettings]:
        bad = [name for name in value if not re.match(QUEUE_NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"queue names must match {QUEUE_NAME_PATTERN}: {bad}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init kwargs; the environment outranks them.
        return env_settings, init_settings


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def load_settings(path: Path | None = None) -> Settings:
    """Read ``path`` (default: ``$CONVEYOR_CONFIG`` or ./deploy.toml) plus the environment.

    Relative paths inside the file are resolved against the file's directory, so processes
    may start anywhere.
    """
    path = path or config_path()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{path}: cannot read: {exc}") from exc
    elif CONFIG_ENV in os.environ:
        raise SettingsError(f"{path}: {CONFIG_ENV} names a file that does not exist")
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise SettingsError(_describe(path, exc)) from exc
    except PydanticSettingsError as exc:  # an environment value that is not JSON
        raise SettingsError(
            f"{exc}: a list or table set by an environment variable is JSON, e.g."
            ' CONVEYOR_REDIS__SENTINELS=\'["10.0.0.5:26379", "10.0.0.6:26379"]\''
        ) from None
    base = path.resolve().parent
    return settings.model_copy(
        update={
            "functions": settings.functions.model_copy(
                update={"dir": _resolve(base, settings.functions.dir)}
            ),
            "redis": settings.redis.model_copy(
                update={"data_dir": _resolve(base, settings.redis.data_dir)}
            ),
            "store": settings.store.model_copy(
                update={"cache_dir": _resolve(base, settings.store.cache_dir)}
            ),
        }
    )


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def _describe(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        key = ".".join(loc)
        env = "CONVEYOR_" + "__".join(part.upper() for part in loc)
        lines.append(f"{path}: {key} (or ${env}): {err['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once on first use."""
    return load_settings()


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def gpu_queue(queue: str) -> str:
    """The GPU variant of a queue: invocations of ``[resources] gpu = 1`` functions."""
    return f"{queue}{GPU_QUEUE_SUFFIX}"


def all_queues(settings: Settings) -> list[str]:
    """Every queue of the deployment and its GPU variant, as workers consume them."""
    return [q for name in settings.queues for q in (name, gpu_queue(name))]
