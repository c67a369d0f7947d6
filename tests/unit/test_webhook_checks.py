"""Webhook signatures (checked by the reference standardwebhooks library), the SSRF guard,
and what a request may ask for."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from ipaddress import ip_address

import aiohttp
import pytest
from standardwebhooks import Webhook

from conveyor.errors import ValidationError
from conveyor.guard import Guard, RefusedAddressError, guarded_connector
from conveyor.settings import Settings
from conveyor.webhooks.deliverer import _retry_after
from conveyor.webhooks.intake import WebhookIntake
from conveyor.webhooks.signing import headers, new_secret

REFUSED = {
    "127.0.0.1": "loopback",
    "0.0.0.0": "unspecified",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "224.0.0.1": "multicast",
    "240.0.0.1": "reserved",
    "100.64.0.1": "non-global",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "ff02::1": "multicast",
    "::ffff:10.0.0.1": "private",  # IPv4-mapped
    "::ffff:127.0.0.1": "loopback",
    "2002:7f00:1::1": "6to4",  # 127.0.0.1 inside
    "2002:5db8:d822::1": "6to4",
}

# Spellings of 127.0.0.1 that aiohttp takes for literals (all digits) and skips its resolver
# for, while Python's ipaddress does not read them at all.
LOOPBACK_SPELLINGS = ["127.1", "2130706433", "0x7f.1", "017700000001"]


def test_every_signing_secret_signs_and_the_reference_library_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = json.dumps({"event": "completed", "status": "succeeded"}).encode()
    signed = headers([new, old], "msg_1", int(time.time()), body)
    for secret in (old, new):
        assert Webhook(secret).verify(body, signed) == json.loads(body)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_secret()).verify(body, signed)


@pytest.mark.parametrize("address", list(REFUSED))
def test_the_guard_refuses_every_non_public_address(address: str) -> None:
    why = Guard().refusal(ip_address(address))
    assert why is not None and REFUSED[address] in why
    assert Guard(("0.0.0.0/0", "::/0")).refusal(ip_address(address)) is None


def test_the_guard_lets_public_and_listed_addresses_through() -> None:
    assert Guard().refusal(ip_address("93.184.216.34")) is None
    assert Guard().refusal(ip_address("2606:4700::1111")) is None
    assert Guard(("127.0.0.0/8",)).refusal(ip_address("127.0.0.7")) is None


def test_a_name_is_judged_by_what_it_resolves_to() -> None:
    with pytest.raises(RefusedAddressError, match=r"localhost resolves to 127\.0\.0\.1"):
        asyncio.run(Guard().resolve("localhost", 80))
    assert asyncio.run(Guard(("127.0.0.0/8", "::1/128")).resolve("localhost", 80))
    with pytest.raises(RefusedAddressError, match="does not resolve"):
        asyncio.run(Guard().resolve("no-such-host.invalid", 80))


def test_a_request_may_ask_for_what_is_safe() -> None:
    intake = WebhookIntake(Guard(("127.0.0.0/8",)), enabled=True)
    accepted = asyncio.run(intake.accept({"url": "http://127.0.0.1:9/hook"}))
    assert json.loads(accepted) == {"url": "http://127.0.0.1:9/hook", "events": ["completed"]}
    for url, why in (
        ("http://user:pw@127.0.0.1/x", "credentials"),
        ("http://10.0.0.1/x", "private address"),
        ("http://[::1]/x", "loopback address"),
        ("http://127.0.0.1:99999/x", "not a URL"),
    ):
        with pytest.raises(ValidationError, match=why) as refused:
            asyncio.run(intake.accept({"url": url}))
        assert refused.value.errors[0]["field"] == "webhook.url"
    with pytest.raises(ValidationError, match=r"\[webhooks\] secret"):
        asyncio.run(WebhookIntake(Guard(), enabled=False).accept({"url": "http://x"}))


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert _retry_after("7") == 7.0 and _retry_after(None) is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 50 < (_retry_after(later) or 0) <= 61
    assert _retry_after("soon") is None


def test_webhook_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        Settings(webhooks={"secret": "not-a-secret"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        Settings(webhooks={"allow_networks": ["10.0.0.0/33"]})  # type: ignore[arg-type]
    two = Settings(webhooks={"secret": f"{new_secret()} {new_secret()}"})  # type: ignore[arg-type]
    assert len(two.webhooks.secrets) == 2


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_an_address_is_judged_as_the_socket_reads_it(host: str) -> None:
    with pytest.raises(RefusedAddressError, match=r"127\.0\.0\.1 is a loopback"):
        asyncio.run(Guard().resolve(host, 80))
    with pytest.raises(RefusedAddressError, match="loopback"):
        Guard().check_connect(host)
    Guard(("127.0.0.0/8",)).check_connect(host)


def test_the_guarded_connector_never_connects_to_a_refused_literal() -> None:
    """aiohttp connects to ``http://2130706433:PORT/`` without asking any resolver; the
    guarded socket factory (webhooks and URL inputs) refuses it before a connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]

    async def post(host: str) -> None:
        connector = guarded_connector(Guard())
        async with aiohttp.ClientSession(connector=connector) as session:
            await session.post(f"http://{host}:{port}/hook", data=b"{}")

    try:
        for host in ["127.0.0.1", "[::ffff:127.0.0.1]", *LOOPBACK_SPELLINGS]:
            # refused by the guard's socket factory (or, for the legacy spellings, by
            # aiohttp itself since 3.13: either way before any connection)
            with pytest.raises((RefusedAddressError, aiohttp.InvalidURL)):
                asyncio.run(post(host))
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()
