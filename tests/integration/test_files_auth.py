"""Files and API keys: a key sees only its own files (uploads, and its invocations'
outputs), may put only its own uploads in an input, and an admin sees every file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from tests.integration.test_files import MAKER, READER, TOML
from tests.support import Stack, make_key, write_function

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
