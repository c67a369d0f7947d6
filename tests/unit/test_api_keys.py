"""API keys and scopes, without Redis."""

from __future__ import annotations

import pytest

from conveyor.auth.caller import Caller
from conveyor.auth.keys import PREFIX, Action, KeyRecord, digest, new_key, parse_scopes
from conveyor.errors import ApiKeyError, PermissionDeniedError


def key(*scopes: str, id_: str = "k1") -> KeyRecord:
    return KeyRecord(id_, "test", scopes, 0.0, "0" * 64)


def test_a_key_is_recognisable_random_and_stored_as_its_digest() -> None:
    made = new_key()
    assert made.startswith(PREFIX) and len(made) >= len(PREFIX) + 43
    assert made != new_key()
    assert digest(made) == digest(made) and len(digest(made)) == 64 and made not in digest(made)


def test_scopes_are_checked_when_a_key_is_made() -> None:
    assert parse_scopes(["invoke:*", "read:iris", "admin", "invoke:*"]) == (
        "invoke:*",
        "read:iris",
        "admin",
    )
    for bad in (["write:iris"], ["invoke:"], ["invoke:Iris"], ["read"], []):
        with pytest.raises(ApiKeyError):
            parse_scopes(bad)


def test_globs_match_function_names() -> None:
    team = key("invoke:team-a-*", "read:iris")
    assert team.allows(Action.INVOKE, "team-a-embed")
    assert not team.allows(Action.INVOKE, "team-b-embed")
    assert not team.allows(Action.INVOKE, "iris") and team.allows(Action.READ, "iris")
    assert key("admin").allows(Action.INVOKE, "anything")


def test_what_a_caller_may_do_with_invocations() -> None:
    invoker, reader = Caller(key("invoke:echo", id_="a")), Caller(key("read:echo", id_="b"))
    assert invoker.may_handle("echo", "a", Action.READ)  # its own
    assert not invoker.may_handle("echo", "someone", Action.READ)
    assert invoker.may_handle("echo", "a", Action.INVOKE)  # cancel its own
    assert reader.may_handle("echo", "someone", Action.READ)
    assert not reader.may_handle("echo", "b", Action.INVOKE)  # read never cancels
    assert invoker.sees("echo") and not invoker.sees("iris")
    assert Caller().may_handle("x", None, Action.INVOKE)  # [api] auth = "none"
    with pytest.raises(PermissionDeniedError) as denied:
        reader.require(Action.INVOKE, "echo")
    assert denied.value.scope == "invoke:echo"
