"""GPU placement with simulated devices: ``conveyor worker --gpus`` starts one supervised
worker process per device with CUDA_VISIBLE_DEVICES set before anything is imported; GPU
functions go to the GPU variant of their queue; setup() runs once per process within the
start-up allowance; hard limits hold; a dead process is replaced and nothing is lost.

There is no GPU here: what a test can see is what a real host differs in only below us --
the environment each process gets and the queues it consumes.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import (
    Process,
    Stack,
    cancel,
    conveyor,
    invoke,
    result,
    wait_for,
    wait_until,
    write_function,
)

pytestmark = pytest.mark.integration

# setup() sleeps longer than Celery's default worker_proc_alive_timeout (4 s): a model load
# that only the raised start-up allowance ([worker] start_timeout) lets through.
WHERE = """
import os, signal, time

class Where:
    def setup(self) -> None:
        time.sleep(4.5)
        self.device_at_setup = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.loaded_at = time.time()

    def predict(self, x: dict) -> dict:
        if x.get("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if x.get("hang"):
            time.sleep(60)
        time.sleep(x.get("sleep", 0))
        return {
            "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device_at_setup": self.device_at_setup,
            "order": os.environ.get("CUDA_DEVICE_ORDER"),
            "pid": os.getpid(),
            "loaded_at": self.loaded_at,
        }
"""
WHERE_TOML = """
[function]
handler = "handler:Where"
[resources]
gpu = 1
[limits]
timeout = 3
"""


def fake_nvidia_smi(root: Path) -> dict[str, str]:
    """An ``nvidia-smi`` that lists two devices, first on PATH."""
    bin_dir = root / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text('#!/bin/sh\nprintf "0\\n1\\n"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def worker_tree(pid: int) -> list[int]:
    """A worker process and its pool children."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(c) for c in children)]


@pytest.fixture(scope="module")
def gpu_stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_worker(visibility_timeout=4.0)
    write_function(stack.functions, "where", WHERE, WHERE_TOML)
    write_function(
        stack.functions,
        "cpu",
        "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n',
    )
    return stack


def test_gpu_function_without_gpu_workers_says_so(gpu_stack: Stack) -> None:
    with gpu_stack.api() as api:
        described = api.get("/functions/where").json()
        assert described["gpu"] == 1 and described["target_queue"] == "default.gpu"
        status, accepted = invoke(api, "where", {})
        assert status == 202
        assert "no live worker consumes queue 'default.gpu'" in accepted["warning"]
        assert "conveyor worker --gpus all --queues default" in accepted["warning"]
        assert cancel(api, "where", accepted["id"]).status_code == 200


def test_one_pinned_process_per_device(gpu_stack: Stack) -> None:
    # `all` asks nvidia-smi; this one lists devices 0 and 1.
    sup = gpu_stack.supervisor(
        "--gpus", "all", "--queues", "default", expect=2, env=fake_nvidia_smi(gpu_stack.root)
    )
    beats = gpu_stack.heartbeats(sup)
    assert sorted(b["device"] for b in beats) == ["0", "1"]
    # The supervisor never loads torch or CUDA (nor do the workers' parents, see test_cli).
    maps = Path(f"/proc/{sup.pid}/maps").read_text()
    assert "libtorch" not in maps and "libcuda" not in maps
    assert all(b["queues"] == ["default.gpu"] and b["concurrency"] == 1 for b in beats)

    with gpu_stack.api() as api:
        with ThreadPoolExecutor(8) as pool:
            runs = list(pool.map(lambda _: invoke(api, "where", {"sleep": 0.4}, wait=60), range(8)))
        outputs = [body["output"] for status, body in runs if status == 200]
        assert len(outputs) == 8, runs
        assert {o["device"] for o in outputs} == {"0", "1"}
        assert all(o["device"] == o["device_at_setup"] for o in outputs)
        assert all(o["order"] == "PCI_BUS_ID" for o in outputs)
        loaded = {(o["pid"], o["loaded_at"]) for o in outputs}
        assert len(loaded) == len({o["pid"] for o in outputs})  # setup() once per process

        # GPU processes do not take CPU work unless asked (--cpu-queues).
        cpu = wait_until(
            lambda: api.get("/functions/cpu").json(), lambda f: "workers" in f, 10, "census"
        )
        assert cpu["workers"] == 0 and "'default'" in cpu["warning"]

        # Hard limits hold on GPU workers; the process serves again afterwards.
        _, hung = invoke(api, "where", {"hang": True})
        assert result(api, "where", hung["id"], wait=30)["error"]["type"] == "TimeLimitExceeded"

        # A process that dies (a segfault, as a CUDA crash would) fails its invocation
        # visibly and is replaced on the same device.
        _, crashed = invoke(api, "where", {"crash": True})
        failed = result(api, "where", crashed["id"], wait=30)
        assert failed["status"] == "failed" and failed["error"]["type"] == "WorkerLostError"
        assert failed["attempts"] > 1  # redelivered first, in case the crash was transient
        status, after = invoke(api, "where", {}, wait=60)
        assert status == 200 and after["output"]["device"] in ("0", "1")
    sup.stop()
    assert not gpu_stack.heartbeats(sup)


def test_dead_worker_process_is_replaced_and_its_invocation_runs(
    gpu_stack: Stack, report: Callable[[str], None]
) -> None:
    sup = gpu_stack.supervisor("--gpus", "0,1", "--queues", "default", expect=2)
    with gpu_stack.api() as api:
        _, first = invoke(api, "where", {"sleep": 2})
        _, second = invoke(api, "where", {"sleep": 2})
        running = wait_until(
            lambda: [b for b in gpu_stack.heartbeats(sup) if b["active"]],
            lambda busy: len(busy) == 2,
            30,
            "both devices busy",
        )
        victim = next(b for b in running if b["device"] == "1")
        for pid in worker_tree(victim["pid"]):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        replaced = wait_until(
            lambda: [b for b in gpu_stack.heartbeats(sup) if b["device"] == "1"],
            lambda beats: any(b["pid"] != victim["pid"] for b in beats),
            60,
            "a new process on device 1",
        )
        assert replaced
        back = time.monotonic() - killed
        done = [result(api, "where", i["id"], wait=60) for i in (first, second)]
        finished = time.monotonic() - killed
        assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
        assert max(d["attempts"] for d in done) == 2  # the killed one ran again
    report(
        f"device 1's worker SIGKILLed: a new process on device 1 heartbeating after {back:.1f} s;"
        f" its invocation done after {finished:.1f} s (visibility timeout 4 s); lost 0"
    )
    died = [e for e in sup.events() if e.get("event") == "worker_process_died"]
    assert died and died[0]["device"] == "1" and "SIGKILL" in died[0]["exit"]
    sup.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gpus", "all"), "no GPU found"),
        (("--gpus", "0,0"), "a device is listed twice"),
        (("--gpus", "0,1", "--autoscale", "1,3"), "MAX is above the 2 device(s)"),
        (("--cpu-queues",), "--cpu-queues goes with --gpus"),
        (("--queues", "gpu"), "--queues: unknown ['gpu']"),
    ],
)
def test_bad_worker_options_are_refused(
    gpu_stack: Stack, args: tuple[str, ...], message: str
) -> None:
    log = gpu_stack.root / "refused.log"
    proc = Process(conveyor("worker", *args), gpu_stack.config, log, env={"PATH": "/usr/bin:/bin"})
    assert proc.proc.wait(120) == 2
    wait_for(lambda: message in log.read_text(), 5, "the error message")
