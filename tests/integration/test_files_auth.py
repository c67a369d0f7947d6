"""Files and API keys: a key sees only its own files (uploads, and its invocations'
outputs), may put only its own uploads in an input, and an admin sees every file."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from tests.integration.test_files import MAKER, READER, TOML
from tests.support import Stack, make_key, wait_for, write_function, write_pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(make_stack) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    write_function(stack.functions, "reader", READER, TOML)
    write_function(stack.functions, "maker", MAKER, TOML)
    stack.worker()
    yield stack


def test_keys_see_only_their_own_files(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    alice = {"Authorization": f"Bearer {make_key(stack, 'alice', 'invoke:*')}"}
    bob = {"Authorization": f"Bearer {make_key(stack, 'bob', 'invoke:*')}"}
    admin = {"Authorization": f"Bearer {make_key(stack, 'root', 'admin')}"}

    assert api.post("/files", content=b"anonymous").status_code == 401
    made = api.post("/files", content=b"alice's notes", headers=alice).json()
    assert api.get(made["url"], headers=alice).content == b"alice's notes"
    denied = api.get(made["url"], headers=bob)
    assert denied.status_code == 403 and "another key" in denied.json()["detail"]
    assert api.get(made["url"], headers=admin).status_code == 200
    assert api.delete(made["url"], headers=bob).status_code == 403

    # bob may not hand alice's upload to a function; alice may
    body = {"input": {"doc": made["url"]}}
    refused = api.post("/functions/reader/invoke", json=body, headers=bob)
    assert refused.status_code == 422, refused.text
    assert "another key" in refused.json()["errors"][0]["message"]
    taken = api.post("/functions/reader/invoke", json=body, headers=alice, params={"wait": 30})
    assert taken.status_code == 200 and taken.json()["status"] == "succeeded", taken.text

    # an output belongs to the invocation's key
    done = api.post(
        "/functions/maker/invoke", json={"input": 1}, headers=bob, params={"wait": 30}
    ).json()
    picture = done["output"]["picture"]
    assert api.get(picture, headers=bob).content == bytes(range(256))
    assert api.get(picture, headers=alice).status_code == 403


PASS = "def run(x: str) -> str:\n    return x\n"
# A step's output names a file; the next step reads it as its File field.
RELAY = """
[[steps]]
name = "pass"
function = "passer"

[[steps]]
name = "read"
function = "reader"
input = { doc = "$.steps.pass.output" }
"""
# A step makes a file; the run's output holds it.
MADE = """
[[steps]]
name = "make"
function = "maker"
"""


def test_ownership_travels_with_the_data(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    """One rule where bytes are read, API and worker alike: a file is its owner's, an
    admin's, and the invocations' its owner started (a run's steps are its caller's)."""
    write_function(stack.functions, "passer", PASS, TOML)
    write_pipeline(stack.functions, "relay", RELAY)
    write_pipeline(stack.functions, "made", MADE)
    admin = {"Authorization": f"Bearer {make_key(stack, 'root2', 'admin')}"}
    wait_for(
        lambda: all(
            api.get(f"/functions/{n}", headers=admin).json().get("status") == "ready"
            for n in ("passer", "relay", "made")
        ),
        30,
        "the pipelines deployed",
    )
    alice = {"Authorization": f"Bearer {make_key(stack, 'alice2', 'invoke:*')}"}
    bob = {"Authorization": f"Bearer {make_key(stack, 'bob2', 'invoke:*', 'read:maker')}"}
    secret = api.post("/files", content=b"alice's secret", headers=alice).json()
    reference = f"conveyor://files/{secret['id']}"

    # bob names alice's file as a plain string: the worker reading it for the second step
    # refuses it; alice's own run reads it
    run = api.post(
        "/functions/relay/invoke", json={"input": reference}, headers=bob, params={"wait": 30}
    ).json()
    assert run["status"] == "failed", run
    assert "another key" in run["error"]["message"], run["error"]
    mine = api.post(
        "/functions/relay/invoke", json={"input": reference}, headers=alice, params={"wait": 30}
    ).json()
    assert mine["status"] == "succeeded", mine
    assert mine["output"]["doc"]["size"] == len(b"alice's secret")

    # ?files=data_uri inlines only what the reader may read
    made = api.post(
        "/functions/maker/invoke", json={"input": 1}, headers=alice, params={"wait": 30}
    ).json()
    seen = api.get(
        f"/functions/maker/results/{made['id']}", params={"files": "data_uri"}, headers=bob
    ).json()
    assert seen["output"]["picture"].startswith("http"), seen["output"]
    assert api.get(seen["output"]["picture"], headers=bob).status_code == 403
    own = api.get(
        f"/functions/maker/results/{made['id']}", params={"files": "data_uri"}, headers=alice
    ).json()
    assert own["output"]["picture"].startswith("data:"), own["output"]

    # a run's steps are its caller's: the files they make are URLs the caller reads
    ran = api.post(
        "/functions/made/invoke", json={"input": 2}, headers=alice, params={"wait": 30}
    ).json()
    assert ran["status"] == "succeeded", ran
    picture = ran["output"]["picture"]
    assert picture.startswith("http"), ran["output"]
    assert api.get(picture, headers=alice).content == bytes(range(256)) * 2
    assert api.get(picture, headers=bob).status_code == 403
    step = stack.redis.hget(f"conveyor:job:{ran['id']}.make", "owner")
    assert step == stack.redis.hget(f"conveyor:job:{ran['id']}", "owner") is not None


def _file_records(stack: Stack) -> int:
    return sum(1 for _ in stack.redis.scan_iter("conveyor:file:*"))


def test_every_byte_stored_counts_before_it_is_stored(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    reading = {"Authorization": f"Bearer {make_key(stack, 'reading', 'read:maker')}"}
    refused = api.post("/files", content=b"x" * 100, headers=reading)
    assert refused.status_code == 403 and "files:write" in refused.text, refused.text

    # a key's quota of stored bytes, counted before the bytes go in
    writer = make_key(stack, "writer", "files:write", options=("--max-file-bytes", "3000"))
    headers = {"Authorization": f"Bearer {writer}"}
    first = api.post("/files", content=b"a" * 2000, headers=headers)
    assert first.status_code == 201, first.text
    before = _file_records(stack)
    over = api.post("/files", content=b"b" * 2000, headers=headers)
    assert over.status_code == 429, over.text
    assert over.json()["limit"] == "max_file_bytes" and over.json()["scope"] == "key"
    assert over.headers["ratelimit-policy"] == '"max_file_bytes";q=3000', over.headers
    assert _file_records(stack) == before  # nothing of it kept
    assert api.delete(first.json()["url"], headers=headers).status_code == 204
    again = api.post("/files", content=b"c" * 2900, headers=headers)
    assert again.status_code == 201, again.text  # deleting gave its bytes back

    # an invocation refused by its key's limits stores none of its data URIs
    limited = make_key(stack, "limited", "invoke:reader", options=("--daily", "2"))
    headers = {"Authorization": f"Bearer {limited}"}
    uri = "data:text/plain;base64,aGVsbG8="
    before = _file_records(stack)
    answers = [
        api.post("/functions/reader/invoke", json={"input": {"doc": uri}}, headers=headers)
        for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [202, 202, 429, 429], [a.text for a in answers]
    assert _file_records(stack) == before + 2


def test_one_requests_files_are_bounded_in_all(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.config.write_text(stack.config.read_text() + "[files]\nmax_request_bytes = 10000\n")
    write_function(stack.functions, "reader", READER, TOML)

    def part(byte: bytes) -> str:
        return "data:application/octet-stream;base64," + base64.b64encode(byte * 6000).decode()

    with stack.api() as api:
        one = api.post("/functions/reader/invoke", json={"input": {"doc": part(b"a")}})
        assert one.status_code == 202, one.text
        before = _file_records(stack)
        two = api.post(
            "/functions/reader/invoke", json={"input": {"doc": part(b"b"), "extra": [part(b"c")]}}
        )
        assert two.status_code == 413, two.text
        assert "max_request_bytes" in two.json()["detail"]
        assert _file_records(stack) == before  # the first file of the two removed at once


def test_redis_past_its_cap_refuses_uploads_before_writing(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack()
    stack.set_settings("redis", max_memory_bytes=1024)  # past it from the start
    write_function(stack.functions, "reader", READER, TOML)
    with stack.api() as api:
        wait_for(lambda: api.post("/files", content=b"x").status_code == 503, 10, "the cap seen")
        before = _file_records(stack)
        for answer in (
            api.post("/files", content=b"y" * 5000),
            api.post(
                "/functions/reader/invoke",
                json={"input": {"doc": "data:text/plain;base64,aGVsbG8="}},
            ),
        ):
            assert answer.status_code == 503, answer.text
        assert _file_records(stack) == before
