"""A web page the developer visits, against a keyless API started as a user starts it: DNS
rebinding (a foreign Host), a POST without Content-Type (a page's fetch with a Blob body: no
preflight), a cross-site request, a foreign Origin. Each prints what the API answered, and
nothing any of them asked for happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support import Stack, free_port, start_api, write_function

pytestmark = pytest.mark.faults

ECHO = "def run(x):\n    return x\n"
TOML = '[function]\nhandler = "handler:run"\n'
PAGE = "http://evil.example"
FRIEND = "http://127.0.0.1:5173"  # a front end in development, listed in cors_origins


@pytest.fixture(scope="module")
def api(make_stack) -> Iterator[tuple[Stack, str]]:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", allowed_hosts='["conveyor.test"]', cors_origins=f'["{FRIEND}"]')
    write_function(stack.functions, "echo", ECHO, TOML)
    proc, base = start_api(stack.config, stack.root / "api.log", free_port())
    yield stack, base
    proc.stop()


def _jobs(base: str) -> int:
    return len(httpx.get(f"{base}/functions/echo/jobs").json()["jobs"])


def test_foreign_host_names_are_refused(
    api: tuple[Stack, str], report: Callable[[str], None]
) -> None:
    _, base = api
    port = base.rsplit(":", 1)[1]
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io"):
        answer = httpx.put(
            f"{base}/functions/x",
            content=b"PK\x05\x06" + bytes(18),
            headers={"Host": host, "content-type": "application/zip"},
        )
        report(f"Host {host}: {answer.status_code} {answer.json()['detail']}")
        assert answer.status_code == 400 and "allowed_hosts" in answer.json()["detail"]
    for host in (f"localhost:{port}", "127.0.0.1", f"[::1]:{port}", "conveyor.test", "LOCALHOST"):
        assert httpx.get(f"{base}/functions", headers={"Host": host}).status_code == 200, host
    assert httpx.get(f"{base}/functions/x").status_code == 404  # nothing was deployed


def test_bodies_without_their_content_type_are_415(
    api: tuple[Stack, str], report: Callable[[str], None]
) -> None:
    _, base = api
    before = _jobs(base)
    attempts = {
        "invoke, no Content-Type": httpx.post(
            f"{base}/functions/echo/invoke", content=b'{"input": 1}'
        ),
        "invoke, text/plain": httpx.post(
            f"{base}/functions/echo/invoke",
            content=b'{"input": 1}',
            headers={"content-type": "text/plain"},
        ),
        "map, no Content-Type": httpx.post(
            f"{base}/functions/echo/map", content=b'{"inputs": [1]}'
        ),
        "cancel, a form": httpx.post(
            f"{base}/functions/echo/results/x/cancel",
            content=b"a=1",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        "deploy, no Content-Type": httpx.put(f"{base}/functions/echo", content=b"PK"),
    }
    for name, answer in attempts.items():
        report(f"{name}: {answer.status_code} {answer.json()['detail']}")
        assert answer.status_code == 415, (name, answer.text)
    assert _jobs(base) == before


def test_cross_site_requests_are_403(api: tuple[Stack, str], report: Callable[[str], None]) -> None:
    _, base = api
    json = {"content-type": "application/json"}
    before = _jobs(base)
    attempts = {
        "Sec-Fetch-Site: cross-site": httpx.post(
            f"{base}/functions/echo/map",
            content=b'{"inputs": [1]}',
            headers={**json, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
        ),
        f"Origin {PAGE}": httpx.post(
            f"{base}/functions/echo/invoke",
            content=b'{"input": 1}',
            headers={**json, "Origin": PAGE},
        ),
        "Origin null": httpx.post(
            f"{base}/functions/echo/invoke",
            content=b'{"input": 1}',
            headers={**json, "Origin": "null"},
        ),
        "same-site page on another port": httpx.post(
            f"{base}/functions/echo/invoke",
            content=b'{"input": 1}',
            headers={**json, "Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},
        ),
    }
    for name, answer in attempts.items():
        report(f"{name}: {answer.status_code} {answer.json()['detail']}")
        assert answer.status_code == 403, (name, answer.text)
    assert _jobs(base) == before
    # The API's own pages, an origin the operator listed, and a link followed to a page.
    own = httpx.post(f"{base}/functions/echo/invoke", json={"input": 1}, headers={"Origin": base})
    assert own.status_code == 202, own.text
    friend = httpx.post(
        f"{base}/functions/echo/invoke", json={"input": 2}, headers={"Origin": FRIEND}
    )
    assert friend.status_code == 202 and friend.headers["access-control-allow-origin"] == FRIEND
    link = httpx.get(
        f"{base}/dashboard", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    )
    assert link.status_code == 200
    for path in ("/dashboard", "/docs"):
        page = httpx.get(base + path)
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
