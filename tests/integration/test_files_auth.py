"""Files and API keys: a key sees only its own files (uploads, and its invocations'
outputs), may put only its own uploads in an input, and an admin sees every file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from tests.integration.test_files import MAKER, READER, TOML
from tests.support import Stack, make_key, wait_for, write_function

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


def _pipeline(stack: Stack, name: str, manifest: str) -> None:
    folder = stack.functions / name
    folder.mkdir(exist_ok=True)
    (folder / "function.toml").write_text(manifest)


def test_ownership_travels_with_the_data(api: TestClient, stack: Stack) -> None:  # type: ignore[type-arg]
    """One rule where bytes are read, API and worker alike: a file is its owner's, an
    admin's, and the invocations' its owner started (a run's steps are its caller's)."""
    write_function(stack.functions, "passer", PASS, TOML)
    _pipeline(stack, "relay", RELAY)
    _pipeline(stack, "made", MADE)
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
