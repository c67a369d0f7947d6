"""`conveyor map` as a user runs it: against a real API and worker, interrupted, resumed."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Process, Stack, conveyor, free_port, start_api, wait_for, write_function

pytestmark = pytest.mark.acceptance

SQUARE = """
import time

def run(x: int) -> int:
    time.sleep({seconds})
    return x * x
"""


@pytest.fixture(scope="module")
def stack(make_stack) -> Iterator[tuple[Stack, str, int]]:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    write_function(
        stack.functions,
        "square",
        SQUARE.format(seconds=0),
        '[function]\nhandler = "handler:run"\n',
    )
    write_function(
        stack.functions,
        "slow_square",
        SQUARE.format(seconds=0.004),
        '[function]\nhandler = "handler:run"\n',
    )
    stack.worker("--queues", "default", "--concurrency", "2")
    port = free_port()
    api, base = start_api(stack.config, stack.root / "api.log", port)
    yield stack, base, port
    api.stop()


def write_inputs(path: Path, values: list[object]) -> Path:
    path.write_text("".join(json.dumps(v) + "\n" for v in values))
    return path


def map_command(stack: Stack, base: str, name: str, source: Path, log: Path) -> Process:
    args = conveyor("map", name, "--input", str(source), "--url", base)
    return Process(args, stack.config, log, cwd=source.parent)


def output_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_results_in_input_order_and_a_non_zero_exit_for_failures(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack, base, _ = stack
    values: list[object] = list(range(2000))
    values[10] = "ten"
    values[1500] = {"not": "a number"}
    source = write_inputs(tmp_path / "numbers.jsonl", values)
    cli = map_command(stack, base, "square", source, tmp_path / "cli.log")
    assert cli.proc.wait(120) == 1, cli.log.read_text()[-2000:]
    said = cli.log.read_text()
    assert "2 of 2000 items did not succeed" in said
    results = output_lines(tmp_path / "numbers.results.jsonl")
    assert [r["index"] for r in results] == list(range(2000))
    for r in results:
        if r["index"] in (10, 1500):
            assert r["status"] == "failed" and r["error"]["type"] == "ValidationError"  # type: ignore[index]
        else:
            assert r["output"] == r["index"] ** 2  # type: ignore[operator]
    assert not (tmp_path / "numbers.results.jsonl.job").exists()


def test_ctrl_c_then_the_same_command_resumes_without_resubmitting(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack, base, _ = stack
    source = write_inputs(tmp_path / "data.jsonl", list(range(3000)))
    output = tmp_path / "data.results.jsonl"
    before = httpx.get(f"{base}/functions/slow_square/jobs", params={"limit": 100}).json()
    first = map_command(stack, base, "slow_square", source, tmp_path / "first.log")
    wait_for(lambda: output.exists() and output.stat().st_size > 2000, 60, "some results")
    first.proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert first.proc.wait(30) != 0
    assert "run the same command again to resume" in first.log.read_text()
    written = len(output.read_text().splitlines())
    assert 0 < written < 3000, "the job was over before the interruption"
    again = map_command(stack, base, "slow_square", source, tmp_path / "again.log")
    assert again.proc.wait(120) == 0, again.log.read_text()[-2000:]
    results = output_lines(output)
    assert [r["index"] for r in results] == list(range(3000))
    assert all(r["output"] == r["index"] ** 2 for r in results)  # type: ignore[operator]
    after = httpx.get(f"{base}/functions/slow_square/jobs", params={"limit": 100}).json()
    assert len(after["jobs"]) == len(before["jobs"]) + 1, "the job was submitted twice"


def test_the_api_lost_mid_stream_and_back_on_its_port(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack, _, _ = stack
    port = free_port()
    api, base = start_api(stack.config, tmp_path / "api.log", port)
    source = write_inputs(tmp_path / "data.jsonl", list(range(3000)))
    output = tmp_path / "data.results.jsonl"
    cli = map_command(stack, base, "slow_square", source, tmp_path / "cli.log")
    try:
        wait_for(lambda: output.exists() and output.stat().st_size > 2000, 60, "some results")
        api.kill(signal.SIGKILL)
        api.stop()
        time.sleep(1)  # the CLI sees the connection drop and retries
        api, _ = start_api(stack.config, tmp_path / "api2.log", port)
        assert cli.proc.wait(120) == 0, cli.log.read_text()[-2000:]
    finally:
        api.stop()
        cli.stop()
    results = output_lines(output)
    assert [r["index"] for r in results] == list(range(3000))
