"""While Redis is down the API answers 503 with Retry-After, never hangs or 500s, and it
recovers by itself when Redis is back."""

from __future__ import annotations

import pytest

from support import cancel, copy_examples, wait_for

pytestmark = pytest.mark.integration


def test_api_with_redis_down_and_back(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    copy_examples(stack.functions, "echo")
    with stack.api() as api:
        accepted = api.post("/functions/echo/invoke", json={"input": 1})
        assert accepted.status_code == 202
        stack.server.stop()
        for call in (
            lambda: api.post("/functions/echo/invoke", json={"input": 1}),
            lambda: api.post("/functions/echo/invoke?wait=5", json={"input": 1}),
            lambda: api.get(f"/functions/echo/results/{accepted.json()['id']}"),
            lambda: cancel(api, "echo", accepted.json()["id"]),
            lambda: api.delete(f"/functions/echo/results/{accepted.json()['id']}"),
        ):
            response = call()
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "5"
            assert response.json()["type"] == "urn:conveyor:problem:broker-unavailable"
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] is False
        assert api.get("/functions").status_code == 200  # the registry needs no Redis
        stack.server.start()
        wait_for(lambda: api.get("/readyz").status_code == 200, 20, "readiness after restart")
        assert api.post("/functions/echo/invoke", json={"input": 2}).status_code == 202
