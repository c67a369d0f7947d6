"""API keys against two real API processes on one Redis: 401, 403, scopes and their globs,
invocations owned by the key that made them, and a revocation every process obeys."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from conveyor.store.bundle import pack
from tests.support import (
    Process,
    Stack,
    conveyor,
    free_port,
    make_key,
    start_api,
    wait_for,
    write_function,
)

pytestmark = pytest.mark.integration

ECHO = "def run(x):\n    return x\n"
SLOW = "import time\ndef run(x):\n    time.sleep(30)\n"


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    for name in ("echo", "echoes", "iris-like", "team-a-embed", "team-b-embed"):
        write_function(stack.functions, name, ECHO, '[function]\nhandler = "handler:run"\n')
    write_function(stack.functions, "slow", SLOW, '[function]\nhandler = "handler:run"\n')
    stack.worker("--queues", "default", "--concurrency", "2")
    return stack


@pytest.fixture(scope="module")
def apis(stack: Stack) -> Iterator[list[str]]:
    procs: list[Process] = []
    bases = []
    for i in range(2):
        proc, base = start_api(stack.config, stack.root / f"api-{i}.log", free_port())
        procs.append(proc)
        bases.append(base)
    yield bases
    for proc in procs:
        proc.stop()


def call(
    base: str,
    method: str,
    path: str,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    **kw: object,
) -> httpx.Response:
    sent = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.request(method, base + path, headers=sent, timeout=30, **kw)  # type: ignore[arg-type]


def test_without_a_valid_key_only_health_answers(apis: list[str]) -> None:
    base = apis[0]
    for path in ("/functions", "/functions/echo", "/schema"):
        refused = call(base, "GET", path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == 'Bearer realm="conveyor"'
        assert refused.headers["content-type"].startswith("application/problem+json")
        bad = call(base, "GET", path, key="cvk_not-a-key")
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == 'Bearer realm="conveyor", error="invalid_token"'
    assert call(base, "GET", "/functions", key="Basic abc").status_code == 401
    assert call(base, "GET", "/healthz").status_code == 200
    assert call(base, "GET", "/readyz").status_code == 200
    assert call(base, "GET", "/docs").status_code == 200


def test_scopes_and_globs(stack: Stack, apis: list[str]) -> None:
    base = apis[1]
    team = make_key(stack, "team-a", "invoke:team-a-*", "read:echo*")
    listed = call(base, "GET", "/functions", team).json()["functions"]
    assert sorted(f["name"] for f in listed) == ["echo", "echoes", "team-a-embed"]
    assert (
        call(
            base, "POST", "/functions/team-a-embed/invoke?wait=30", team, json={"input": 1}
        ).json()["output"]
        == 1
    )
    denied = call(base, "POST", "/functions/team-b-embed/invoke", team, json={"input": 1})
    assert denied.status_code == 403
    assert denied.headers["www-authenticate"] == (
        'Bearer realm="conveyor", error="insufficient_scope", scope="invoke:team-b-embed"'
    )
    assert call(base, "POST", "/functions/echo/invoke", team, json={"input": 1}).status_code == 403
    assert call(base, "GET", "/functions/echoes", team).status_code == 200
    assert call(base, "GET", "/functions/iris-like", team).status_code == 403
    doc = call(base, "GET", "/schema", team).json()
    assert "/functions/team-a-embed/invoke" in doc["paths"]
    assert "/functions/team-b-embed/invoke" not in doc["paths"]
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_invocations_belong_to_the_key_that_made_them(stack: Stack, apis: list[str]) -> None:
    one, two = apis
    alice = make_key(stack, "alice", "invoke:echo", "invoke:slow")
    bob = make_key(stack, "bob", "invoke:echo", "invoke:slow")
    reader = make_key(stack, "reader", "read:*")
    admin = make_key(stack, "root", "admin")
    done = call(one, "POST", "/functions/echo/invoke?wait=30", alice, json={"input": "mine"}).json()
    url = f"/functions/echo/results/{done['id']}"
    assert call(two, "GET", url, alice).json()["output"] == "mine"  # another API process
    others = call(two, "GET", url, bob)
    assert others.status_code == 403 and "made with another key" in others.json()["detail"]
    assert call(two, "GET", url, reader).status_code == 200
    assert call(one, "DELETE", url, bob).status_code == 403
    running = call(one, "POST", "/functions/slow/invoke", alice, json={"input": 1}).json()
    slow = f"/functions/slow/results/{running['id']}"
    assert call(one, "POST", slow + "/cancel", bob).status_code == 403
    assert call(one, "POST", slow + "/cancel", reader).status_code == 403
    assert call(two, "POST", slow + "/cancel", alice).json()["status"] == "cancelled"
    assert call(one, "DELETE", url, admin).status_code == 204
    # Idempotency-Keys are per key: bob's "k" is not alice's.
    first = call(
        one,
        "POST",
        "/functions/echo/invoke",
        alice,
        json={"input": 1},
        headers={"Idempotency-Key": "k"},
    )
    second = call(
        one,
        "POST",
        "/functions/echo/invoke",
        bob,
        json={"input": 2},
        headers={"Idempotency-Key": "k"},
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]


def test_a_revoked_key_stops_working_on_every_process(
    stack: Stack, apis: list[str], report: Callable[[str], None]
) -> None:
    key = make_key(stack, "short-lived", "read:*")
    for base in apis:  # both processes know (and cache) it
        assert call(base, "GET", "/functions", key).status_code == 200
    unknown = call(apis[0], "GET", "/functions", key="cvk_" + "x" * 43)
    subprocess.run(
        conveyor("keys", "revoke", "short-lived"),
        env={**os.environ, "CONVEYOR_CONFIG": str(stack.config)},
        check=True,
        capture_output=True,
    )
    revoked_at = time.monotonic()
    first = [call(base, "GET", "/functions", key).status_code for base in apis]
    for base in apis:  # pub/sub carries the revocation; allow it a moment, and say how long
        wait_for(lambda b=base: call(b, "GET", "/functions", key).status_code == 401, 1, "revoked")
    took = time.monotonic() - revoked_at
    answer = call(apis[1], "GET", "/functions", key)
    assert answer.json()["detail"] == unknown.json()["detail"]  # revoked looks like unknown
    assert answer.headers["www-authenticate"] == unknown.headers["www-authenticate"]
    listed = subprocess.run(
        conveyor("keys", "ls"),
        env={**os.environ, "CONVEYOR_CONFIG": str(stack.config)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "short-lived" not in listed and "alice" in listed and "cvk_" not in listed
    report(
        f"after `conveyor keys revoke` returned, the first requests got {first}; both API"
        f" processes refused the key within {took * 1000:.0f} ms"
    )


def test_deploys_need_admin_and_every_api_process_follows(apis: list[str], stack: Stack) -> None:
    admin = make_key(stack, "deployer", "admin")
    invoker = make_key(stack, "invoker", "invoke:*")
    reader = make_key(stack, "versions-reader", "read:echo")
    folder = write_function(
        stack.root / "laptop", "pushed", ECHO, '[function]\nhandler = "handler:run"\n'
    )
    bundle = pack(folder, 1024 * 1024).data
    zipped = {"content-type": "application/zip", "Prefer": "wait=60"}
    for method, path, body in (
        ("PUT", "/functions/pushed", {"content": bundle, "headers": zipped}),
        ("POST", "/functions/echo/rollback", {"json": {"version": "0123456789ab"}}),
        ("POST", "/functions/echo/unpin", {}),
        ("DELETE", "/functions/echo", {}),
    ):
        refused = call(apis[0], method, path, key=invoker, **body)  # type: ignore[arg-type]
        assert refused.status_code == 403, (method, path, refused.text)
        assert 'scope="admin"' in refused.headers["www-authenticate"]
    assert call(apis[0], "GET", "/functions/echo/versions", key=reader).status_code == 200
    assert call(apis[0], "GET", "/functions/echoes/versions", key=reader).status_code == 403

    deployed = call(apis[0], "PUT", "/functions/pushed", key=admin, content=bundle, headers=zipped)
    assert deployed.status_code == 201, deployed.text
    version = deployed.json()["version"]
    # The other API process serves it too, without a folder: it follows the store.
    other = wait_for(
        lambda: call(apis[1], "GET", "/functions/pushed", key=admin).json().get("version"),
        10,
        "the second API process",
    )
    assert other == version
    done = call(apis[1], "POST", "/functions/pushed/invoke?wait=30", key=invoker, json={"input": 7})
    assert done.status_code == 200 and done.json()["output"] == 7
    assert call(apis[1], "DELETE", "/functions/pushed", key=admin).status_code == 204
    wait_for(
        lambda: call(apis[0], "GET", "/functions/pushed", key=admin).status_code == 404,
        10,
        "the removal on the first",
    )


def test_the_dashboard_data_shows_a_key_only_what_it_may_read(
    stack: Stack, apis: list[str]
) -> None:
    base = apis[0]
    mine = make_key(stack, "dash-mine", "invoke:echo")
    theirs = make_key(stack, "dash-theirs", "invoke:echo")
    reader = make_key(stack, "dash-reader", "read:echo")
    ids = {}
    for name, key in (("mine", mine), ("theirs", theirs)):
        done = call(base, "POST", "/functions/echo/invoke?wait=30", key=key, json={"input": name})
        assert done.status_code == 200, done.text
        ids[name] = done.json()["id"]

    def recent(key: str) -> set[str]:
        data = call(base, "GET", "/dashboard/data", key=key)
        assert data.status_code == 200, data.text
        return {r["id"] for r in data.json()["recent"]}

    assert ids["mine"] in recent(mine) and ids["theirs"] not in recent(mine)
    assert ids["theirs"] in recent(theirs) and ids["mine"] not in recent(theirs)
    assert {ids["mine"], ids["theirs"]} <= recent(reader)  # read:echo reads every echo
