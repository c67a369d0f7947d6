"""The test harness: real redis-server processes, deploy.toml files, function folders and
Conveyor processes started as a user starts them. Tests, ``bench/`` and the soak test
import it as ``tests.support`` (run from the repository root: pytest's ``pythonpath``, or
``python -m``)."""

from tests.support.functions import (
    QUEUES,
    RECORDING,
    copy_examples,
    importing_refresh,
    load,
    loaded_entries,
    write_function,
    write_recording_function,
    write_settings,
)
from tests.support.processes import (
    BIN,
    REPO,
    Process,
    RssPeak,
    child_pids,
    conveyor,
    cpu_ticks,
    free_port,
    most_at_once,
    rss_mib,
    start_api,
    start_worker,
    wait_for,
    wait_until,
)
from tests.support.receiver import Receiver
from tests.support.servers import RedisServer, S3Server, Sentinels
from tests.support.stack import (
    LOCAL,
    ClientThreads,
    Stack,
    cancel,
    cli,
    invoke,
    make_key,
    result,
    until_reloaded,
)

__all__ = [
    "BIN",
    "LOCAL",
    "QUEUES",
    "RECORDING",
    "REPO",
    "ClientThreads",
    "Process",
    "Receiver",
    "RedisServer",
    "RssPeak",
    "S3Server",
    "Sentinels",
    "Stack",
    "cancel",
    "child_pids",
    "cli",
    "conveyor",
    "copy_examples",
    "cpu_ticks",
    "free_port",
    "importing_refresh",
    "invoke",
    "load",
    "loaded_entries",
    "make_key",
    "most_at_once",
    "result",
    "rss_mib",
    "start_api",
    "start_worker",
    "until_reloaded",
    "wait_for",
    "wait_until",
    "write_function",
    "write_recording_function",
    "write_settings",
]
