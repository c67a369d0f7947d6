"""``conveyor worker`` options: devices, autoscale bounds, the queues a worker consumes."""

from __future__ import annotations

import pytest

from conveyor.broker.census import QueueCensus, no_worker_warning
from conveyor.cli.serve import worker_queues as _worker_queues
from conveyor.errors import WorkerOptionsError
from conveyor.runtime.gpus import device_env, parse_gpus
from conveyor.settings import Settings, all_queues
from conveyor.worker.supervisor import parse_autoscale

SETTINGS = Settings(queues={"realtime": {}, "batch": {}})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "devices"),
    [
        ("2", ["0", "1"]),
        ("0,2", ["0", "2"]),
        ("2,", ["2"]),
        (" 1 , 3 ", ["1", "3"]),
        ("GPU-8f2c0e5a-1b2c", ["GPU-8f2c0e5a-1b2c"]),
    ],
)
def test_gpu_specs(spec: str, devices: list[str]) -> None:
    assert parse_gpus(spec) == devices


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0", "for device 0 alone write --gpus 0,"),
        ("x", "takes all, a count"),
        ("0,0", "listed twice"),
        (",", "takes"),
    ],
)
def test_bad_gpu_specs(spec: str, message: str) -> None:
    with pytest.raises(WorkerOptionsError, match=message):
        parse_gpus(spec)


def test_device_env_pins_one_device_in_bus_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    assert device_env("1") == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_autoscale_bounds() -> None:
    assert parse_autoscale("1,4", None) == (1, 4)
    assert parse_autoscale("2,2", ["0", "1"]) == (2, 2)
    assert parse_autoscale("0,2", None) == (0, 2)
    for spec in ("4", "a,b", "0,0", "3,1", "-1,2"):
        with pytest.raises(WorkerOptionsError, match="--autoscale"):
            parse_autoscale(spec, None)
    with pytest.raises(WorkerOptionsError, match="MAX is above the 2 device"):
        parse_autoscale("1,3", ["0", "1"])


def test_worker_queues() -> None:
    assert all_queues(SETTINGS) == ["realtime", "realtime.gpu", "batch", "batch.gpu"]
    assert _worker_queues(SETTINGS, None, gpu=False, cpu_too=False) == ["realtime", "batch"]
    assert _worker_queues(SETTINGS, "batch", gpu=True, cpu_too=False) == ["batch.gpu"]
    assert _worker_queues(SETTINGS, "realtime", gpu=True, cpu_too=True) == [
        "realtime.gpu",
        "realtime",
    ]
    assert _worker_queues(SETTINGS, "realtime.gpu", gpu=False, cpu_too=False) == ["realtime.gpu"]
    with pytest.raises(WorkerOptionsError, match=r"unknown \['nope'\].*realtime, batch"):
        _worker_queues(SETTINGS, "realtime,nope", gpu=False, cpu_too=False)


def test_census() -> None:
    beats = [
        {"queues": ["a", "b.gpu"]},
        {"queues": ["a"]},
        {"kind": "autoscaler", "queues": ["c"]},
    ]
    census = QueueCensus.of(beats)
    assert (census.count("a"), census.count("b.gpu"), census.count("c")) == (2, 1, 0)
    assert census.warning("a") is None and census.warning("c") is None  # c scales from 0
    assert census.warning("d") == no_worker_warning("d")
    assert "(conveyor worker --queues a)" in no_worker_warning("a")
    assert "(conveyor worker --gpus all --queues b)" in no_worker_warning("b.gpu")
