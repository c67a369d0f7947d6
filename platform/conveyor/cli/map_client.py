"""``conveyor map NAME --input data.jsonl [--output results.jsonl]``: the client
(:mod:`conveyor.cli.maps` holds its arguments).

Uploads the file as NDJSON (streamed, with an Idempotency-Key), then writes the results in
input order as they come, with a progress bar. What it has done is kept beside the output
(``<output>.job``: the key, then the job's id), so running the same command again after an
interruption (Ctrl-C, a dropped connection) resumes: it never submits twice and continues
after the last result it wrote. Exits 1 when items failed, saying how many.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tqdm import tqdm

from conveyor.errors import ConveyorError

RETRIES = 8
T = TypeVar("T")
READ_TIMEOUT = 120.0


def run(base: str, headers: dict[str, str], args: argparse.Namespace) -> int:
    source: Path = args.input
    if not source.is_file():
        raise ConveyorError(f"--input {source}: no such file")
    output: Path = args.output or source.with_name(source.stem + ".results.jsonl")
    state_file = output.with_name(output.name + ".job")
    state = _load(state_file, args.name, source)
    _save(state_file, state)  # before uploading: a retry reuses the Idempotency-Key
    try:
        return _run(base, headers, args, output=output, state_file=state_file, state=state)
    except KeyboardInterrupt:
        print(f"interrupted: run the same command again to resume ({state_file})")
        raise


def _run(
    base: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    *,
    output: Path,
    state_file: Path,
    state: dict[str, Any],
) -> int:
    source: Path = args.input
    timeout = httpx.Timeout(30, read=READ_TIMEOUT)
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
        if "job" not in state:
            state["job"] = _upload(client, args, source, state["key"])
            output.write_bytes(b"")  # a new job: nothing of an earlier run's output stays
            _save(state_file, state)
        status = f"/functions/{args.name}/jobs/{state['job']}"
        job = _retrying(lambda: _get(client, status))
        written = _complete_lines(output)
        with (
            output.open("ab") as sink,
            tqdm(total=job["total"], initial=written, unit="item", desc=args.name) as bar,
        ):
            failed = _results(
                client,
                name=args.name,
                job=state["job"],
                total=job["total"],
                written=written,
                sink=sink,
                bar=bar,
            )
        job = _retrying(lambda: _get(client, status))
    state_file.unlink(missing_ok=True)
    counts = job["counts"]
    print(
        f"{args.name}: {counts['succeeded']} succeeded, {counts['failed']} failed,"
        f" {counts['cancelled']} cancelled of {job['total']}; results in {output}"
    )
    if counts["failed"] or counts["cancelled"] or failed:
        print(f"{counts['failed'] + counts['cancelled']} of {job['total']} items did not succeed")
        return 1
    return 0


def _load(path: Path, name: str, source: Path) -> dict[str, Any]:
    if path.exists():
        state: dict[str, Any] = json.loads(path.read_text())
        if state.get("function") != name or state.get("input") != str(source.resolve()):
            raise ConveyorError(
                f"{path} belongs to another run ({state.get('function')} over"
                f" {state.get('input')}); remove it, or choose another --output"
            )
        return state
    return {"function": name, "input": str(source.resolve()), "key": str(uuid.uuid4())}


def _save(path: Path, state: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(state))
    os.replace(partial, path)


def _upload(client: httpx.Client, args: argparse.Namespace, source: Path, key: str) -> str:
    """The job's id; the same Idempotency-Key on every try, so a try whose answer was lost
    gets the job the first one made."""
    params = {"priority": args.priority} if args.priority is not None else {}

    def once() -> str:
        size = source.stat().st_size
        with tqdm(total=size, unit="B", unit_scale=True, desc="upload", leave=False) as bar:
            response = client.post(
                f"/functions/{args.name}/map",
                params=params,
                headers={"content-type": "application/x-ndjson", "Idempotency-Key": key},
                content=_chunks(source, bar),
                timeout=httpx.Timeout(30, read=600),
            )
        if response.status_code != 202:
            raise ConveyorError(f"the API answered {response.status_code}: {response.text}")
        return str(response.json()["id"])

    return _retrying(once)


def _chunks(source: Path, bar: tqdm) -> Iterator[bytes]:
    with source.open("rb") as f:
        while chunk := f.read(1 << 20):
            bar.update(len(chunk))
            yield chunk


def _get(client: httpx.Client, path: str) -> dict[str, Any]:
    response = client.get(path)
    if response.status_code != 200:
        raise ConveyorError(f"the API answered {response.status_code}: {response.text}")
    return response.json()  # type: ignore[no-any-return]


def _complete_lines(output: Path) -> int:
    """Lines already written; a last line cut by an interruption is dropped."""
    if not output.exists():
        return 0
    data = output.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        with output.open("r+b") as f:
            f.truncate(whole)
    return data.count(b"\n", 0, whole)


def _results(
    client: httpx.Client,
    *,
    name: str,
    job: str,
    total: int,
    written: int,
    sink: Any,
    bar: tqdm,
) -> int:
    """Write result lines from ``written`` on; a dropped stream resumes where it stopped."""
    failed = 0
    tries = 0
    while written < total:
        try:
            url = f"/functions/{name}/jobs/{job}/results"
            with client.stream("GET", url, params={"from": written}) as response:
                if response.status_code != 200:
                    answer = response.read().decode(errors="replace")
                    raise ConveyorError(f"the API answered {response.status_code}: {answer}")
                for line in response.iter_lines():
                    if not line:
                        continue
                    sink.write(line.encode() + b"\n")
                    sink.flush()
                    written += 1
                    tries = 0
                    if json.loads(line)["status"] != "succeeded":
                        failed += 1
                        bar.set_postfix(failed=failed)
                    bar.update(1)
        except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
            tries += 1
            if tries > RETRIES:
                raise ConveyorError(
                    f"lost the API ({exc}); run the command again to resume"
                ) from None
            time.sleep(min(2**tries * 0.25, 10))
    return failed


def _retrying(call: Callable[[], T]) -> T:
    for attempt in range(RETRIES):
        try:
            return call()
        except httpx.TransportError:
            time.sleep(min(2**attempt * 0.25, 10))
    return call()
