"""Which GPUs ``conveyor worker --gpus`` pins its processes to.

The supervising process never imports torch or touches CUDA (a CUDA context does not
survive ``fork``, and it would hold memory on every device): ``all`` asks ``nvidia-smi``,
else torch in a throwaway process. Each worker process then gets one device in
``CUDA_VISIBLE_DEVICES`` before anything in it imports torch, so its code sees ``cuda:0``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from conveyor.errors import WorkerOptionsError

DEVICE = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z/-]+)$")
_TORCH_COUNT = "import torch; print(torch.cuda.device_count())"


def parse_gpus(spec: str) -> list[str]:
    """``all``, ``N`` (devices 0..N-1) or ``0,2`` (those ids; ``2,`` is device 2 alone)."""
    spec = spec.strip()
    if spec == "all":
        return detect_gpus()
    if spec.isdigit():
        if int(spec) < 1:
            raise WorkerOptionsError(
                f"--gpus {spec}: a count must be at least 1; for device 0 alone write --gpus 0,"
            )
        return [str(i) for i in range(int(spec))]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    bad = [d for d in devices if not DEVICE.match(d)]
    if not devices or bad:
        raise WorkerOptionsError(
            f"--gpus {spec!r}: takes all, a count (2) or device ids (0,2 or GPU-<uuid>)"
        )
    if len(set(devices)) != len(devices):
        raise WorkerOptionsError(f"--gpus {spec!r}: a device is listed twice")
    return devices


def detect_gpus() -> list[str]:
    """The machine's GPU indices, in ``nvidia-smi``'s (PCI bus) order."""
    found = _nvidia_smi() or _torch_count()
    if not found:
        raise WorkerOptionsError(
            "--gpus all: no GPU found (nvidia-smi is missing or lists none, torch sees no"
            " CUDA device); name the devices to pin processes anyway, e.g. --gpus 0,1"
        )
    return found


def device_env(device: str) -> dict[str, str]:
    """The environment a process pinned to ``device`` starts with."""
    # nvidia-smi numbers devices by PCI bus, CUDA by speed unless told otherwise.
    order = os.environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return {"CUDA_VISIBLE_DEVICES": device, "CUDA_DEVICE_ORDER": order}


def _nvidia_smi() -> list[str]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        out = subprocess.run(
            [binary, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def _torch_count() -> list[str]:
    try:
        out = subprocess.run(
            [sys.executable, "-c", _TORCH_COUNT],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        count = int(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return []
    return [str(i) for i in range(count)]
