"""``conveyor keys``, ``conveyor webhooks``, ``conveyor flower``: running the platform."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

from conveyor.auth.keys import SCOPE_FORMS, KeyLimits, KeyRecord
from conveyor.errors import ApiKeyError, SettingsError
from conveyor.integers import whole_number
from conveyor.settings import Settings, is_loopback

T = TypeVar("T")
FLOWER_USER = "conveyor"


def add_commands(sub: Any) -> None:
    """Add the admin commands to the CLI's subparsers."""
    keys = sub.add_parser("keys", help="API keys: create, ls, update, revoke (they live in Redis)")
    keys_sub = keys.add_subparsers(required=True, metavar="action")
    create = keys_sub.add_parser("create", help="make a key and print it, once")
    create.add_argument("--name", required=True, help="a name to list and revoke it by")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help=f"{SCOPE_FORMS}; repeat for several",
    )
    create.add_argument(
        "--webhook-secret",
        action="store_true",
        help="give the key its own webhook signing secret (printed once): its invocations'"
        " deliveries are signed with it instead of the platform's",
    )
    _limit_options(create)
    create.set_defaults(run=_keys_create)
    keys_sub.add_parser("ls", help="list keys (never the keys themselves)").set_defaults(
        run=_keys_ls
    )
    update = keys_sub.add_parser(
        "update", help="set a key's limits (the options given; 'none' lifts one)"
    )
    update.add_argument("name")
    _limit_options(update)
    update.set_defaults(run=_keys_update)
    revoke = keys_sub.add_parser("revoke", help="revoke a key: it stops working at once")
    revoke.add_argument("name")
    revoke.set_defaults(run=_keys_revoke)

    flower = sub.add_parser("flower", help="run Flower, configured for Conveyor's broker")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        help="required beyond loopback; on loopback a password is made and printed if not given",
    )
    flower.set_defaults(run=_flower)

    webhooks = sub.add_parser("webhooks", help="deliver webhooks (or: make a signing secret)")
    webhooks.add_argument(
        "action",
        nargs="?",
        choices=["deliver", "secret"],
        default="deliver",
        help="deliver (the default): run the delivery process; secret: print a new whsec_...",
    )
    webhooks.set_defaults(run=_webhooks)


def _limit_options(parser: argparse.ArgumentParser) -> None:
    """A key's limits, each enforced across every API process (429 past it)."""
    parser.add_argument("--rate", help="requests per period: 10/s, 600/m, 10000/h")
    parser.add_argument("--max-inflight", help="its invocations unfinished at once")
    parser.add_argument("--max-queued", help="its invocations waiting to start at once")
    parser.add_argument("--daily", help="invocations accepted per UTC day")
    parser.add_argument(
        "--max-file-bytes", help="bytes of files (uploads, data URIs, URL inputs) it holds at once"
    )


def _limits(args: argparse.Namespace, base: KeyLimits | None = None) -> KeyLimits:
    """The limits the options give (over ``base``: an option left out keeps its value)."""
    values: dict[str, Any] = asdict(base) if base is not None else {}
    for name in ("rate", "max_inflight", "max_queued", "daily", "max_file_bytes"):
        given = getattr(args, name)
        if given is None:
            continue
        if given.lower() == "none":
            values[name] = None
        elif name == "rate":
            values[name] = given
        elif (number := whole_number(given)) is not None:
            values[name] = number
        else:
            option = name.replace("_", "-")
            raise ApiKeyError(f"--{option} takes a whole number (or none); got {given!r}")
    return KeyLimits(**values)


def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from conveyor.webhooks.signing import new_secret

    secret = new_secret() if args.webhook_secret else ""
    limits = _limits(args)
    key, record = _with_keys(
        settings, lambda store: store.create(args.name, args.scope, secret, limits)
    )
    print(key)
    if secret:
        print(secret)
        print(
            "# the key's webhook signing secret, on the line above: give it to the receivers"
            " of its invocations' webhooks (shown this once too)",
            file=sys.stderr,
        )
    print(
        f"# key {record.name!r} with scopes {' '.join(record.scopes)}: shown this once, only"
        " its SHA-256 is kept. Send it as Authorization: Bearer <key> (or CONVEYOR_API_KEY).",
        file=sys.stderr,
    )
    return 0


def _keys_ls(settings: Settings, args: argparse.Namespace) -> int:
    for record, used in _with_keys(settings, lambda store: store.list()):
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(record.created_at))
        last = time.strftime("%Y-%m-%d %H:%M", time.gmtime(used)) if used else "never"
        limits = " ".join(f"{k}={v}" for k, v in record.limits.shown().items())
        print(
            f"{record.name:<24} {' '.join(record.scopes):<40} created {created} used {last}"
            + (f" limits {limits}" if limits else "")
        )
    return 0


def _keys_update(settings: Settings, args: argparse.Namespace) -> int:
    async def update(store: Any) -> KeyRecord:
        current = {r.name: r for r, _ in await store.list()}.get(args.name)
        base = current.limits if current is not None else None
        return await store.limit(args.name, _limits(args, base))  # type: ignore[no-any-return]

    record = _with_keys(settings, update)
    shown = ", ".join(f"{k} {v}" for k, v in record.limits.shown().items()) or "none"
    print(f"key {record.name!r}: limits {shown}; every API process applies them at once")
    return 0


def _keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    _with_keys(settings, lambda store: store.revoke(args.name))
    print(f"revoked {args.name!r}: it no longer works on any API process")
    return 0


def _flower(settings: Settings, args: argparse.Namespace) -> int:
    """Flower with Conveyor's Celery configuration: the same priority steps and separator
    (or it reads the wrong Redis lists), the queues and their GPU variants.

    Flower's HTTP API can revoke and kill tasks and shut workers down, and any web page
    the developer visits can reach a loopback port: it never runs without basic auth.
    Without ``--basic-auth`` (or Flower's own ``FLOWER_BASIC_AUTH``) a password is made
    and printed, on loopback; beyond loopback one must be given."""
    from conveyor.broker.app import create_celery

    os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)  # never inherited either
    credentials = args.basic_auth or os.environ.get("FLOWER_BASIC_AUTH")
    if not credentials:
        if not is_loopback(args.address):
            raise SettingsError(
                f"conveyor flower --address {args.address} would show (and let anyone control)"
                " the workers: give --basic-auth USER:PASSWORD, or listen on 127.0.0.1"
            )
        password = secrets.token_urlsafe(18)
        credentials = f"{FLOWER_USER}:{password}"
        print(
            f"conveyor flower: http://{args.address}:{args.port} needs basic auth: user"
            f" {FLOWER_USER!r}, password {password!r} (made for this run; --basic-auth"
            " USER:PASSWORD sets your own)",
            file=sys.stderr,
            flush=True,
        )
    user, _, password = credentials.partition(":")
    if not user or not password:
        raise SettingsError("--basic-auth is USER:PASSWORD, both non-empty")
    argv = ["flower", f"--port={args.port}", f"--address={args.address}"]
    argv.append(f"--basic-auth={credentials}")
    create_celery(settings).start(argv)
    return 0


def _webhooks(settings: Settings, args: argparse.Namespace) -> int:
    from conveyor.webhooks.signing import new_secret

    if args.action == "secret":
        print(new_secret())
        return 0
    from conveyor.auth.db import ApiKeyStore
    from conveyor.db.connections import pooled_client
    from conveyor.webhooks.db import WebhookQueue
    from conveyor.webhooks.deliverer import Deliverer

    async def run() -> None:
        client = pooled_client(settings)
        deliverer = Deliverer(
            settings.webhooks,
            WebhookQueue(client),
            ApiKeyStore(client),
            files_base=settings.api.files_base(),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, deliverer.stop)
        try:
            await deliverer.run()
        finally:
            await client.aclose()

    if not settings.webhooks.secrets:
        print(
            "conveyor: no [webhooks] secret (CONVEYOR_WEBHOOKS__SECRET): the API accepts no"
            " webhooks, so there is nothing to deliver; waiting to be stopped",
            file=sys.stderr,
        )
        stop = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        signal.sigwait(stop)
        return 0
    asyncio.run(run())
    return 0


def _with_keys(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action`` on the key store of the deployment's Redis."""
    from conveyor.auth.db import ApiKeyStore
    from conveyor.db.connections import pooled_client

    async def run() -> T:
        client = pooled_client(settings)
        try:
            return await action(ApiKeyStore(client))
        finally:
            await client.aclose()

    return asyncio.run(run())
