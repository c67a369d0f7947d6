"""What every command that talks to an API shares: its address, its key, one request."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError
from conveyor.settings import Settings

if TYPE_CHECKING:
    import httpx

API_KEY_ENV = "CONVEYOR_API_KEY"  # sent as Authorization: Bearer <key>


def add_url_option(parser: argparse.ArgumentParser, *names: str) -> None:
    parser.add_argument(
        *(names or ("--url",)), dest="url", help="API base URL (default: from deploy.toml)"
    )


def base_url(settings: Settings, args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    host = settings.api.host if settings.api.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.api.port}"


def api_headers() -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request with the key; an API out of reach is a :class:`ConveyorError`."""
    import httpx  # only the client commands need it: not imported by worker or api

    kwargs["headers"] = {**kwargs.get("headers", {}), **api_headers()}
    try:
        return httpx.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise ConveyorError(
            f"cannot reach the API at {url}: {exc}; is `conveyor api` running?"
        ) from None


def ok(response: httpx.Response) -> Any:
    """The answer's JSON, or what the API said as a :class:`ConveyorError`."""
    if response.status_code >= 400:
        raise ConveyorError(f"the API answered {response.status_code}: {response.text}")
    return response.json()
