"""Requests made to crash or stall the API, against the real process started as a user
starts it: nesting that overflowed the native stack (a recursive input model), one NDJSON
line of 48 MiB, items past the function's input limit. Each prints what the API answered;
the API must answer every one with a 4xx and keep serving."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from statistics import median

import httpx
import pytest

from tests.support import Stack, free_port, start_api, write_function

pytestmark = pytest.mark.faults

RECURSIVE = """
from pydantic import BaseModel

class Node(BaseModel):
    children: list["Node"] = []

def run(node: Node) -> int:
    return len(node.children)
"""
TOML = '[function]\nhandler = "handler:run"\n'
SMALL = TOML + "[limits]\nmax_input_bytes = 1000\n"
LARGE = TOML + "[limits]\nmax_input_bytes = 67108864\n"  # 64 MiB: a 48 MiB item is taken
NDJSON = {"content-type": "application/x-ndjson"}
JSON = {"content-type": "application/json"}


def nested(levels: int) -> str:
    """A Node ``levels`` deep, as the review sent it (two JSON levels per Node)."""
    return '{"children":[' * levels + "{}" + "]}" * levels


@pytest.fixture(scope="module")
def api(make_stack) -> Iterator[tuple[Stack, str]]:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    write_function(stack.functions, "tree", RECURSIVE, TOML)
    write_function(stack.functions, "small", "def run(x):\n    return x\n", SMALL)
    write_function(stack.functions, "large", "def run(x: str) -> int:\n    return len(x)\n", LARGE)
    write_function(stack.functions, "gen", "def run(x: int):\n    yield x\n", TOML)
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    yield stack, base
    proc.stop()


def _alive(base: str) -> None:
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def test_deep_nesting_is_a_400_everywhere_and_the_api_lives(
    api: tuple[Stack, str], report: Callable[[str], None]
) -> None:
    stack, base = api
    deep = nested(30_000)  # 450 KB: the SIGSEGV through ijson and jsonschema-rs
    with httpx.Client(base_url=base, timeout=60) as client:
        attempts = {
            "invoke": client.post(
                "/functions/tree/invoke", content=f'{{"input":{deep}}}', headers=JSON
            ),
            "map, JSON": client.post(
                "/functions/tree/map", content=f'{{"inputs":[{{}},{deep}]}}', headers=JSON
            ),
            "map, NDJSON": client.post(
                "/functions/tree/map", content=f"{{}}\n{deep}\n", headers=NDJSON
            ),
            "rollback": client.post(  # its body may have 4 KiB
                "/functions/tree/rollback",
                content='{"version":' + "[" * 2000 + "]" * 2000 + "}",
                headers=JSON,
            ),
        }
        for name, response in attempts.items():
            report(f"{name}: {response.status_code} {response.json()['detail']}")
            assert response.status_code == 400, response.text
            assert "max_json_depth" in response.json()["detail"]
            _alive(base)
        # Within the limit (64 levels: 31 Nodes), the same shape is taken and runs.
        fine = client.post(
            "/functions/tree/invoke", content=f'{{"input":{nested(31)}}}', headers=JSON
        )
        assert fine.status_code == 202, fine.text
        too_deep = client.post(
            "/functions/tree/invoke", content=f'{{"input":{nested(32)}}}', headers=JSON
        )
        assert too_deep.status_code == 400
    assert "Traceback" not in (stack.root / "api.log").read_text()


def test_a_48_mib_line_is_refused_at_the_input_limit_while_the_api_answers(
    api: tuple[Stack, str], report: Callable[[str], None]
) -> None:
    _, base = api
    size, chunk = 48 * 1024 * 1024, b"7" * 65536
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while not done.is_set():
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.005)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.perf_counter()
    try:
        status, detail = _send_while_reading(base, "/functions/tree/map", size, chunk)
        elapsed = time.perf_counter() - started
    finally:
        time.sleep(0.2)
        done.set()
        prober.join()
    report(
        f"48 MiB line: {status} after {elapsed:.3f} s ({detail}); /healthz meanwhile:"
        f" {len(latencies)} answers, median {median(latencies) * 1000:.1f} ms,"
        f" slowest {max(latencies) * 1000:.1f} ms"
    )
    assert status == 413
    assert "item 0 is over 1048576 bytes" in detail
    _alive(base)


def test_a_48_mib_line_within_the_limit_leaves_the_api_answering(
    api: tuple[Stack, str], report: Callable[[str], None]
) -> None:
    """The same line for a function that takes 64 MiB inputs: read, parsed and stored while
    /healthz goes on being answered."""
    _, base = api
    latencies, done = [], threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while not done.is_set():
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.005)

    line = b'"' + b"x" * (48 * 1024 * 1024 - 3) + b'"\n'
    prober = threading.Thread(target=probe)
    prober.start()
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            answer = client.post("/functions/large/map", content=line, headers=NDJSON)
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        prober.join()
    report(
        f"48 MiB line within the limit: {answer.status_code} after {elapsed:.2f} s;"
        f" /healthz meanwhile: {len(latencies)} answers, median"
        f" {median(latencies) * 1000:.1f} ms, slowest {max(latencies) * 1000:.1f} ms"
    )
    assert answer.status_code == 202, answer.text
    _alive(base)


def test_items_over_the_function_limit_are_413_naming_the_item(
    api: tuple[Stack, str], report: Callable[[str], None]
) -> None:
    _, base = api
    just_over = "x" * 999  # 1,001 bytes as JSON text
    with httpx.Client(base_url=base, timeout=60) as client:
        forms = {
            "JSON item": client.post(
                "/functions/small/map", content=f'{{"inputs":[1,"{just_over}"]}}', headers=JSON
            ),
            "NDJSON line": client.post(
                "/functions/small/map", content=f'1\n"{just_over}"\n', headers=NDJSON
            ),
            # a 64 MiB string: ijson would gather it whole before handing it over
            "64 MiB JSON item": client.post(
                "/functions/small/map",
                content=b'{"inputs":[1,"' + b"x" * (64 * 1024 * 1024) + b'"]}',
                headers=JSON,
            ),
        }
        for name, response in forms.items():
            report(f"{name}: {response.status_code} {response.json()['detail']}")
            assert response.status_code == 413, response.text
            assert "item 1 is over 1000 bytes" in response.json()["detail"]
        ok = client.post(
            "/functions/small/map", content=f'{{"inputs":["{"x" * 900}"]}}', headers=JSON
        )
        assert ok.status_code == 202, ok.text
    _alive(base)


def _send_while_reading(base: str, path: str, size: int, chunk: bytes) -> tuple[int, str]:
    """POST ``size`` bytes of NDJSON with no newline, one thread sending while this one
    reads: the answer may come (and the connection close) long before the body is sent,
    which an HTTP client library may report as a write error instead of the answer."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/x-ndjson\r\nContent-Length: {size}\r\n\r\n"
    )

    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(head.encode())
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    with sock:
        while b"\r\n\r\n" not in answer or len(answer) < _expected(answer):
            got = sock.recv(65536)
            if not got:
                break
            answer += got
    head_text, _, body = answer.partition(b"\r\n\r\n")
    status = int(head_text.split(b" ", 2)[1])
    return status, json.loads(body)["detail"]


def _expected(answer: bytes) -> int:
    """The length of a whole answer, once its head is in (Content-Length)."""
    head, _, _ = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(answer)


def test_numbers_that_are_not_ascii_digits_are_a_4xx_everywhere(api: tuple[Stack, str]) -> None:
    """'²' passes str.isdigit() and int() refuses it; 4,300 digits int() refuses too:
    every header, query value and part name that takes a number answers 4xx."""
    _, base = api
    made = httpx.post(f"{base}/files", content=b"0123456789", timeout=10).json()
    invoked = httpx.post(f"{base}/functions/gen/invoke", json={"input": 1}, timeout=10).json()
    huge = "9" * 5000
    answers = {
        "range ²": httpx.get(
            f"{base}/files/{made['id']}", headers={"Range": "bytes=²-".encode("latin-1")}
        ),
        "range huge": httpx.get(f"{base}/files/{made['id']}", headers={"Range": f"bytes={huge}-"}),
        "after ²": httpx.get(
            f"{base}/functions/gen/results/{invoked['id']}/stream", params={"after": "²"}
        ),
        "last-event-id huge": httpx.get(
            f"{base}/functions/gen/results/{invoked['id']}/stream",
            headers={"Last-Event-ID": huge},
        ),
        "priority ²": httpx.post(
            f"{base}/functions/small/map", params={"priority": "²"}, json={"inputs": [1]}
        ),
        "part input.²": httpx.post(
            f"{base}/functions/small/invoke",
            files={"input": (None, "{}"), "input.²": ("a.bin", b"x")},
        ),
    }
    for what, answer in answers.items():
        assert 200 <= answer.status_code < 500, (what, answer.status_code, answer.text)
        if answer.status_code >= 300:
            assert answer.status_code != 500, what
    assert answers["range ²"].status_code == 200  # a Range not served: the whole file
    assert answers["after ²"].status_code == 400
    assert answers["priority ²"].status_code == 400
    _alive(base)
