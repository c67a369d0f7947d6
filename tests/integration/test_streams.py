"""Streaming outputs, end to end: generator handlers in real worker processes, their events
read over HTTP from a real API process with a real Server-Sent Events reader (httpx-sse).

Chunks arrive before the end; a stream replays after the end and resumes after any event
(Last-Event-ID or ?after) with nothing lost or repeated; two readers see the same events;
a reader may connect before any worker runs; a cancel closes the generator at its next
yield (its ``finally`` runs); a retried or redelivered attempt streams again, its events
told apart; the size limit fails the invocation saying so.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from tests.support import Stack, free_port, start_api, wait_for, write_function

pytestmark = pytest.mark.integration

# Yields ``n`` tokens; waits for a gate file before token ``gate_at``; prints a line per
# token; writes ``closed`` to the marker in its finally (a cancel must reach it).
TOKENS = """
import time
from pathlib import Path
from conveyor import TextStream, context

def run(x: dict) -> TextStream:
    marker = Path(x["marker"]) if x.get("marker") else None
    try:
        for i in range(x["n"]):
            if x.get("gate") and i == x.get("gate_at"):
                while not Path(x["gate"]).exists():
                    time.sleep(0.02)
            print(f"made token {i}")
            if x.get("progress"):
                context.current().progress(i + 1, x["n"])
            yield f"t{i} "
            time.sleep(x.get("delay", 0))
    finally:
        if marker:
            marker.write_text("closed")
"""
# A list of dicts, with a retry: the first attempt fails after two chunks.
PARTS = """
from collections.abc import Iterator
from pathlib import Path
from pydantic import BaseModel

class Part(BaseModel):
    index: int
    text: str

def run(x: dict) -> Iterator[Part]:
    flag = Path(x["flag"])
    for i in range(x["n"]):
        if i == 2 and not flag.exists():
            flag.write_text("failed once")
            raise RuntimeError("the first attempt fails after two chunks")
        yield Part(index=i, text="p" * x.get("size", 1))
"""
# Yields once, then blocks without yielding: a cancel cannot close it at a yield.
STUCK = """
import time
from pathlib import Path
def run(marker: str):
    try:
        yield "started"
        time.sleep(60)
        yield "never"
    finally:
        Path(marker).write_text("closed")
"""
ASYNC = """
import asyncio

async def run(n: int):
    for i in range(n):
        await asyncio.sleep(0.01)
        yield {"i": i}
"""
MANIFEST = '[function]\nhandler = "handler:run"\n'


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", stream_heartbeat=0.5)
    write_function(stack.functions, "tokens", TOKENS, MANIFEST + "[limits]\ntimeout = 30\n")
    write_function(
        stack.functions,
        "parts",
        PARTS,
        MANIFEST + '[retries]\nmax = 1\nbackoff = 0.1\non = ["RuntimeError"]\n'
        "[limits]\nmax_stream_bytes = 4000\n",
    )
    write_function(stack.functions, "counter", ASYNC, MANIFEST)
    # the grace after a cancel: timeout - soft_timeout = 1 s
    write_function(
        stack.functions, "stuck", STUCK, MANIFEST + "[limits]\ntimeout = 30\nsoft_timeout = 29\n"
    )
    # on a queue no worker serves until a test starts one
    write_function(stack.functions, "later", TOKENS, MANIFEST + '[queue]\nname = "batch"\n')
    stack.worker("--queues", "default", "--concurrency", "2")
    return stack


@pytest.fixture(scope="module")
def base(stack: Stack) -> Iterator[str]:
    proc, url = start_api(stack.config, stack.root / "api.log", free_port())
    yield url
    proc.stop()


def invoke(base: str, name: str, payload: Any) -> dict[str, Any]:
    answer = httpx.post(f"{base}/functions/{name}/invoke", json={"input": payload}, timeout=30)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    assert body["stream_url"] == f"/functions/{name}/results/{body['id']}/stream"
    return body


def events(
    base: str,
    url: str,
    headers: dict[str, str] | None = None,
    until: int | None = None,
    got: list[ServerSentEvent] | None = None,
) -> list[ServerSentEvent]:
    """The stream's events until 'done' (or until ``until`` of them have come), each
    appended to ``got`` as it comes."""
    got = [] if got is None else got
    with (
        httpx.Client(base_url=base, timeout=60) as client,
        connect_sse(client, "GET", url, headers=headers or {}) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for event in source.iter_sse():
            got.append(event)
            if event.event == "done" or (until is not None and len(got) >= until):
                break
    return got


def kinds(got: list[ServerSentEvent]) -> list[str]:
    return [e.event for e in got]


def data(event: ServerSentEvent) -> Any:
    return json.loads(event.data)


def outputs(got: list[ServerSentEvent]) -> list[Any]:
    return [data(e)["output"] for e in got if e.event == "output"]


def test_chunks_arrive_before_the_end_and_the_stream_replays(base: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    body = invoke(base, "tokens", {"n": 6, "gate": str(gate), "gate_at": 3})
    first: list[ServerSentEvent] = []
    with (
        httpx.Client(base_url=base, timeout=60) as client,
        connect_sse(client, "GET", body["stream_url"]) as source,
    ):
        for event in source.iter_sse():
            first.append(event)
            if event.event == "output" and len(outputs(first)) == 3:
                # three tokens are here, and the handler is held before its fourth
                status = client.get(f"/functions/tokens/results/{body['id']}").json()
                assert status["status"] == "running"
                gate.write_text("go")
            if event.event == "done":
                break
    assert [int(e.id) for e in first] == list(range(1, len(first) + 1))
    assert kinds(first)[:2] == ["status", "status"]
    assert [data(e)["status"] for e in first[:2]] == ["queued", "running"]
    assert outputs(first) == [f"t{i} " for i in range(6)]
    assert [data(e)["line"] for e in first if e.event == "log"] == [
        f"made token {i}" for i in range(6)
    ]
    done = data(first[-1])
    assert done["status"] == "succeeded" and done["output"] == "t0 t1 t2 t3 t4 t5 "
    # After the end: the whole stream again, the same events.
    again = events(base, body["stream_url"])
    assert [(e.id, e.event, e.data) for e in again] == [(e.id, e.event, e.data) for e in first]


def test_resume_after_any_event_loses_and_repeats_nothing(base: str) -> None:
    body = invoke(base, "tokens", {"n": 8, "delay": 0.05})
    whole = events(base, body["stream_url"])
    ids = [int(e.id) for e in whole]
    for after in (0, 1, 3, len(whole) // 2, len(whole) - 1):
        by_header = events(base, body["stream_url"], {"Last-Event-ID": str(after)})
        assert [int(e.id) for e in by_header] == ids[after:]
        assert [e.data for e in by_header[:-1]] == [e.data for e in whole[after:-1]]
        by_query = events(base, f"{body['stream_url']}?after={after}")
        assert [int(e.id) for e in by_query] == ids[after:]
    # Resuming mid-stream, while the handler still runs: a reader that drops after three
    # events and comes back with the last id it saw gets exactly the rest.
    body = invoke(base, "tokens", {"n": 10, "delay": 0.1})
    head = events(base, body["stream_url"], until=3)
    rest = events(base, body["stream_url"], {"Last-Event-ID": head[-1].id})
    joined = head + rest
    assert [int(e.id) for e in joined] == list(range(1, len(joined) + 1))
    assert outputs(joined) == [f"t{i} " for i in range(10)]
    bad = httpx.get(f"{base}{body['stream_url']}", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]


def test_two_readers_see_the_same_events(base: str) -> None:
    body = invoke(base, "tokens", {"n": 20, "delay": 0.02})
    seen: list[list[ServerSentEvent]] = [[], []]

    def read(i: int) -> None:
        seen[i] = events(base, body["stream_url"])

    readers = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(60)
    assert len(seen[0]) > 20
    assert [(e.id, e.event, e.data) for e in seen[0]] == [(e.id, e.event, e.data) for e in seen[1]]


def test_a_reader_connected_before_any_worker_runs(stack: Stack, base: str) -> None:
    body = invoke(base, "later", {"n": 3})
    got: list[ServerSentEvent] = []
    reader = threading.Thread(target=events, args=(base, body["stream_url"]), kwargs={"got": got})
    reader.start()
    wait_for(lambda: got, 10, "the queued event")
    time.sleep(1.2)  # the reader waits, kept open by heartbeats (every 0.5 s here)
    assert [data(e) for e in got] == [{"status": "queued", "ahead": 0}]
    worker = stack.worker("--queues", "batch", "--concurrency", "1")
    try:
        reader.join(60)
    finally:
        worker.stop()
    assert data(got[0]) == {"status": "queued", "ahead": 0}
    assert outputs(got) == ["t0 ", "t1 ", "t2 "]
    assert data(got[-1])["status"] == "succeeded"


def test_cancel_closes_the_generator_at_its_next_yield(base: str, tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    body = invoke(base, "tokens", {"n": 1000, "delay": 0.05, "marker": str(marker)})
    got: list[ServerSentEvent] = []
    with (
        httpx.Client(base_url=base, timeout=60) as client,
        connect_sse(client, "GET", body["stream_url"]) as source,
    ):
        for event in source.iter_sse():
            got.append(event)
            if event.event == "output" and len(outputs(got)) == 5:
                cancelled = client.post(f"/functions/tokens/results/{body['id']}/cancel")
                assert cancelled.status_code == 200, cancelled.text
                asked = time.monotonic()
            if event.event == "done":
                ended = time.monotonic() - asked
                break
    assert data(got[-1])["status"] == "cancelled"
    assert ended < 5  # the done event follows the cancel (figures: well under a second)
    wait_for(lambda: marker.exists(), 10, "the generator's finally")
    assert marker.read_text() == "closed"
    assert len(outputs(got)) < 1000


def test_a_generator_that_does_not_yield_again_is_killed_after_the_grace(
    stack: Stack, base: str, tmp_path: Path
) -> None:
    marker = tmp_path / "closed"
    body = invoke(base, "stuck", str(marker))
    head = events(base, body["stream_url"], until=3)  # queued, running, the first chunk
    assert outputs(head) == ["started"]
    pid = int(stack.redis.hget(f"conveyor:job:{body['id']}", "pid"))
    cancelled = httpx.post(f"{base}/functions/stuck/results/{body['id']}/cancel", timeout=10)
    assert cancelled.status_code == 200
    rest = events(base, body["stream_url"], {"Last-Event-ID": head[-1].id})
    assert data(rest[-1])["status"] == "cancelled"
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the attempt killed after 1 s")
    assert not marker.exists()  # killed, not closed: its finally never ran
    # the stream expires with the result
    record_ttl = stack.redis.pttl(f"conveyor:job:{body['id']}")
    stream_ttl = stack.redis.pttl(f"conveyor:stream:{body['id']}")
    assert 0 < stream_ttl <= record_ttl <= 3600 * 1000


def test_a_retried_attempt_streams_again_and_only_its_chunks_are_the_output(
    base: str, tmp_path: Path
) -> None:
    body = invoke(base, "parts", {"n": 4, "flag": str(tmp_path / "flag")})
    got = events(base, body["stream_url"])
    shown = [(e.event, data(e).get("attempt"), data(e).get("status")) for e in got]
    assert shown == [
        ("status", None, "queued"),
        ("status", 1, "running"),
        ("output", 1, None),
        ("output", 1, None),
        ("error", 1, None),
        ("status", 2, "retrying"),
        ("status", 2, "running"),
        *[("output", 2, None)] * 4,
        ("done", None, "succeeded"),
    ]
    assert data(got[4])["error"]["type"] == "RuntimeError"
    final = data(got[-1])
    assert final["output"] == [{"index": i, "text": "p"} for i in range(4)]
    assert final["attempts"] == 2


def test_the_size_limit_fails_the_invocation_saying_so(base: str, tmp_path: Path) -> None:
    (tmp_path / "flag").write_text("no failure")
    body = invoke(base, "parts", {"n": 100, "flag": str(tmp_path / "flag"), "size": 100})
    got = events(base, body["stream_url"])
    final = data(got[-1])
    assert final["status"] == "failed"
    assert final["error"]["type"] == "StreamTooLargeError"
    assert "max_stream_bytes of 4000" in final["error"]["message"]
    assert 0 < len(outputs(got)) < 100


def test_an_async_generator_streams_and_progress_is_an_event(base: str) -> None:
    got = events(base, invoke(base, "counter", 5)["stream_url"])
    assert outputs(got) == [{"i": i} for i in range(5)]
    assert data(got[-1])["output"] == [{"i": i} for i in range(5)]
    got = events(base, invoke(base, "tokens", {"n": 3, "progress": True})["stream_url"])
    assert [data(e)["fraction"] for e in got if e.event == "progress"][-1] == 1.0


def test_an_idle_stream_sends_heartbeats(base: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    body = invoke(base, "tokens", {"n": 2, "gate": str(gate), "gate_at": 1})
    with httpx.stream("GET", f"{base}{body['stream_url']}", timeout=30) as response:
        lines = response.iter_lines()
        comments = 0
        for line in lines:
            if line.startswith(":"):
                comments += 1
                if comments == 2:
                    gate.write_text("go")
            if line.startswith("event: done"):
                break
    assert comments >= 2


def test_what_does_not_stream_has_no_stream(stack: Stack, base: str) -> None:
    write_function(stack.functions, "whole", "def run(x: int) -> int:\n    return x\n", MANIFEST)
    wait_for(
        lambda: httpx.get(f"{base}/functions/whole").json().get("status") == "ready",
        30,
        "whole to load",
    )
    answer = httpx.post(f"{base}/functions/whole/invoke", json={"input": 1}, timeout=30).json()
    assert "stream_url" not in answer
    missing = httpx.get(f"{base}/functions/whole/results/{answer['id']}/stream")
    assert missing.status_code == 404 and "has no stream" in missing.json()["detail"]


def test_a_worker_killed_mid_stream_streams_again_when_redelivered(
    make_stack,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    stack: Stack = make_stack()
    stack.set_worker(visibility_timeout=4, restore_interval=0.5)
    write_function(stack.functions, "tokens", TOKENS, MANIFEST + "[limits]\ntimeout = 3\n")
    first = stack.worker("--queues", "default", "--concurrency", "1")
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    try:
        gate = tmp_path / "gate"
        body = invoke(base, "tokens", {"n": 4, "gate": str(gate), "gate_at": 2})
        head = events(base, body["stream_url"], until=6)  # queued, running, 2 x (log, output)
        assert outputs(head) == ["t0 ", "t1 "]
        first.kill(signal.SIGKILL)
        first.proc.wait(5)
        gate.write_text("go")
        stack.worker("--queues", "default", "--concurrency", "1")
        rest = events(base, body["stream_url"], {"Last-Event-ID": head[-1].id})
    finally:
        proc.stop()
    running = [data(e) for e in rest if e.event == "status" and data(e)["status"] == "running"]
    assert running == [{"status": "running", "attempt": 2, "redelivered": True}]
    again = [data(e) for e in rest if e.event == "output"]
    assert [(o["attempt"], o["redelivered"], o["output"]) for o in again] == [
        (2, True, f"t{i} ") for i in range(4)
    ]
    final = data(rest[-1])
    assert final["status"] == "succeeded" and final["output"] == "t0 t1 t2 t3 "


def test_the_stream_and_its_chunk_are_in_the_schema(base: str) -> None:
    doc = httpx.get(f"{base}/schema").json()
    events = doc["paths"]["/functions/parts/results/{invocation_id}/stream"]["get"]
    content = events["responses"]["200"]["content"]["text/event-stream"]
    assert content["x-conveyor-chunk"] == {"$ref": "#/components/schemas/parts.Chunk"}
    assert doc["components"]["schemas"]["parts.Chunk"]["$ref"].endswith("parts.Part")
    part = doc["components"]["schemas"]["parts.Part"]
    assert set(part["properties"]) == {"index", "text"}
    output = doc["components"]["schemas"]["parts.Result"]["properties"]["output"]
    assert doc["components"]["schemas"][output["$ref"].rsplit("/", 1)[1]]["type"] == "array"
    assert "/functions/{name}/results/{invocation_id}/stream" in doc["paths"]
    described = httpx.get(f"{base}/functions/tokens").json()
    assert described["stream_schema"] == {"type": "string"}
    assert described["output_schema"] == {"type": "string"}
    assert httpx.get(f"{base}/functions/counter").json()["stream_schema"] == {}  # unannotated


def test_a_map_job_of_a_streaming_function_stores_each_items_output(base: str) -> None:
    answer = httpx.post(
        f"{base}/functions/counter/map",
        content=b"2\n3\n",
        headers={"content-type": "application/x-ndjson"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    wait_for(
        lambda: httpx.get(f"{base}{job['status_url']}").json()["finished_at"] is not None,
        30,
        "the map job",
    )
    lines = httpx.get(f"{base}{job['results_url']}").text.splitlines()
    got = {json.loads(line)["index"]: json.loads(line)["output"] for line in lines}
    assert got == {0: [{"i": 0}, {"i": 1}], 1: [{"i": 0}, {"i": 1}, {"i": 2}]}


def test_redis_going_away_ends_a_stream_and_a_reader_resumes_after_it(
    make_stack,  # type: ignore[no-untyped-def]
) -> None:
    stack: Stack = make_stack(redis_args=("--appendonly", "yes", "--appendfsync", "always"))
    stack.set_settings("api", stream_heartbeat=0.5)
    write_function(stack.functions, "tokens", TOKENS, MANIFEST)
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    try:
        body = invoke(base, "tokens", {"n": 3})  # no worker yet: it waits, queued
        got: list[ServerSentEvent] = []
        ended: list[str] = []

        def read() -> None:
            try:
                events(base, body["stream_url"], got=got)
                ended.append("cleanly")
            except httpx.HTTPError as exc:
                ended.append(repr(exc))

        reader = threading.Thread(target=read)
        reader.start()
        wait_for(lambda: got, 10, "the queued event")
        stack.server.stop()
        reader.join(20)
        assert ended == ["cleanly"]  # the response ended, whole: no hang, no done
        assert kinds(got) == ["status"]
        stack.server.start()
        stack.worker("--queues", "default", "--concurrency", "1")
        rest = events(base, body["stream_url"], {"Last-Event-ID": got[-1].id})
    finally:
        proc.stop()
    assert [int(e.id) for e in rest] == list(range(2, len(rest) + 2))
    assert outputs(rest) == ["t0 ", "t1 ", "t2 "] and data(rest[-1])["status"] == "succeeded"
