"""While Redis is down the API answers 503 with Retry-After, never hangs or 500s, and it
recovers by itself when Redis is back."""

from __future__ import annotations

import pytest

from tests.support import cancel, copy_examples, invoke, until_reloaded, wait_for, write_function

TOML = '[function]\nhandler = "handler:run"\n'

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


def test_a_redis_that_lost_everything_gets_the_folders_back(make_stack) -> None:  # type: ignore[no-untyped-def]
    """This Redis keeps nothing on disk: after its restart the API puts its folders back in
    the function store as they are now. A broken folder's last good version lived only in
    the store: its function is listed with its error and no version, and says so."""
    stack = make_stack()
    copy_examples(stack.functions, "echo")
    write_function(stack.functions, "f", "def run(x: str) -> str:\n    return 'good ' + x\n", TOML)
    with stack.api() as api:
        (stack.functions / "f" / "handler.py").write_text("def run(x: str) ->\n")
        until_reloaded(api, "f", lambda f: f["status"] == "error")
        stack.server.stop()
        stack.server.start()
        wait_for(lambda: api.get("/readyz").status_code == 200, 20, "readiness after restart")
        listed = api.get("/functions/f").json()
        assert listed["version"] is None and "SyntaxError" in listed["error"], listed
        refused = api.post("/functions/f/invoke", json={"input": "x"})
        assert refused.status_code == 503 and "has no good version" in refused.json()["detail"]
        stack.worker()
        assert invoke(api, "echo", 1, wait=30)[1]["output"] == 1


def test_a_deploy_redis_refused_is_tried_again_until_it_gets_through(make_stack) -> None:  # type: ignore[no-untyped-def]
    """Redis refuses writes for a while (here: min-replicas-to-write with no replica): a
    folder change cannot be deployed, the API says it is not ready, and the deploy goes
    through by itself once Redis takes writes again."""
    stack = make_stack()
    write_function(stack.functions, "f", "def run(x: str) -> str:\n    return 'one ' + x\n", TOML)
    client = stack.redis
    with stack.api() as api:
        first = api.get("/functions/f").json()["version"]
        client.config_set("min-replicas-to-write", 1)
        try:
            (stack.functions / "f" / "handler.py").write_text(
                "def run(x: str) -> str:\n    return 'two ' + x\n"
            )
            wait_for(lambda: api.get("/readyz").status_code == 503, 10, "not ready")
            assert api.get("/functions/f").json()["version"] == first  # the store refused
        finally:
            client.config_set("min-replicas-to-write", 0)
        wait_for(lambda: api.get("/readyz").status_code == 200, 20, "ready again")
        until_reloaded(api, "f", lambda f: f["version"] != first)


def test_a_channel_closing_on_a_released_connection_raises_a_connection_error(
    make_stack,
) -> None:  # type: ignore[no-untyped-def]
    """The path that stopped a worker when Redis went away mid-job: kombu's channel,
    closing, restores the messages it holds through a client built from its connection,
    released by then. It must be a connection error (Celery reconnects), not another."""
    import redis

    from conveyor.broker.app import create_celery

    stack = make_stack()
    app = create_celery(stack.settings())
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel._pool = None  # as after the pool was disconnected
        channel.connection.client = None  # what Connection.release() leaves
        with pytest.raises(redis.exceptions.ConnectionError):
            channel._connparams()
        assert connection.connection_errors  # Celery ignores these while it reconnects
        assert redis.exceptions.ConnectionError in connection.connection_errors
