"""What a web browser may do with the API: the defences against pages the developer visits.

Keyless mode (``[api] auth = "none"``) trusts whoever reaches the loopback port, and a web
page reaches it through the developer's own browser. So, in that mode:

- **DNS rebinding**: only loopback ``Host`` names are served (``localhost``,
  ``127.0.0.1``, ``[::1]``, any port, plus ``[api] allowed_hosts``); another is a ``400``.
  A page on an attacker's domain rebound to 127.0.0.1 still sends its own name.
- **Cross-site requests**: a request a browser marks ``Sec-Fetch-Site: cross-site``, or
  whose ``Origin`` is neither the API's own nor in ``[api] cors_origins``, is a ``403``
  (a cross-site link followed with GET, a plain navigation, still opens a page).

In every mode a POST, PUT or DELETE that carries a body must say it is JSON, NDJSON or a
zip (each route then takes exactly its own): a page's ``fetch`` with a ``text/plain`` or
``Blob`` body (a CORS "simple" request, sent without a preflight) is a ``415``. Files are
the exceptions, and only they: ``POST /files`` takes any type (a file is what it is) and
an invoke takes ``multipart/form-data``; a page still cannot send them cross-site (the
checks above without keys; with keys, it has no key to send without a preflight). And every
response says ``X-Content-Type-Options: nosniff``; pages add a ``Content-Security-Policy``
without inline script, ``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``.

An ASGI middleware: it runs before routing, on every request, and costs a header scan.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.problems import PROBLEM_JSON, problem_body
from conveyor.settings import ApiSettings

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
# No CORS "simple" type among them: a page cannot send one cross-site without a preflight.
BODY_MEDIA = frozenset(
    {b"application/json", b"application/x-ndjson", b"application/zip", b"application/octet-stream"}
)
WITH_BODY = frozenset({"POST", "PUT", "DELETE", "PATCH"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; object-src 'none';"
    " base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
_ALWAYS = [(b"x-content-type-options", b"nosniff")]
_PAGE = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def host_name(host: str) -> str:
    """``Host``'s name without its port, lowercased: ``[::1]:8000`` -> ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an origin, lowercased; None for ``null`` or junk."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


class BrowserGuard:
    """The checks above, as a middleware factory for Litestar (``DefineMiddleware``)."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.keyless = settings.auth == "none"
        self.hosts = LOOPBACK_HOSTS | {host_name(h) for h in settings.allowed_hosts}
        self.origins = frozenset(o for o in map(origin_of, settings.cors_origins) if o)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = self.refusal(scope["method"], headers, scope["path"])
        if refusal is not None:
            await _problem(send, scope["path"], *refusal)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = _ALWAYS
                for name, value in message["headers"]:
                    if name.lower() == b"content-type" and value.startswith(b"text/html"):
                        extra = _ALWAYS + _PAGE
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        await self.app(scope, receive, secured)

    def refusal(
        self, method: str, headers: dict[bytes, bytes], path: str = ""
    ) -> tuple[int, str, str] | None:
        """(status, problem slug, detail) for a request to refuse, or None."""
        if self.keyless:
            host = headers.get(b"host", b"").decode("latin-1")
            if host_name(host) not in self.hosts:
                return (
                    400,
                    "host-not-allowed",
                    f'this API (no keys: [api] auth = "none") answers only to loopback names'
                    f" (localhost, 127.0.0.1, [::1]); Host {host!r} is not one of them: use one,"
                    " or list it in [api] allowed_hosts",
                )
            if (why := self.cross_site(method, host, headers)) is not None:
                return 403, "cross-site-request", why
        if method in WITH_BODY and _has_body(headers):
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media not in BODY_MEDIA and not _file_body(method, path, media):
                shown = media.decode("latin-1") or "nothing"
                return (
                    415,
                    "unsupported-media-type",
                    "send the body as application/json (a map job: or application/x-ndjson;"
                    f" a deploy: application/zip or application/octet-stream), not {shown}",
                )
        return None

    def cross_site(self, method: str, host: str, headers: dict[bytes, bytes]) -> str | None:
        """Why a request a web page made is refused, or None."""
        origin_header = headers.get(b"origin")
        origin = origin_of(origin_header.decode("latin-1")) if origin_header else None
        if origin is not None and origin in self.origins:
            return None
        site = headers.get(b"sec-fetch-site", b"").lower()
        navigation = headers.get(b"sec-fetch-mode", b"").lower() == b"navigate"
        if site == b"cross-site" and not (navigation and method in ("GET", "HEAD")):
            return (
                "a request from another site's page (Sec-Fetch-Site: cross-site) is refused by"
                " an API without keys; list that page's origin in [api] cors_origins if you"
                " mean it to call this API"
            )
        if origin_header is not None:
            own = {f"http://{host.lower()}", f"https://{host.lower()}"}
            if origin not in own:
                shown = origin_header.decode("latin-1")
                return (
                    f"a request from the page at {shown!r} is refused by an API without keys;"
                    " list that origin in [api] cors_origins if you mean it to call this API"
                )
        return None


def _file_body(method: str, path: str, media: bytes) -> bool:
    """An upload (any type) or an invoke with its files as parts."""
    if method != "POST":
        return False
    if path.rstrip("/") == "/files":
        return True
    return media == b"multipart/form-data" and path.endswith("/invoke")


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"0", b"")
    return b"transfer-encoding" in headers


async def _problem(send: Send, path: str, status: int, slug: str, detail: str) -> None:
    message: Any
    body = json.dumps(problem_body(status, slug, detail, path)).encode()
    message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            *_ALWAYS,
        ],
    }
    await send(message)
    message = {"type": "http.response.body", "body": body, "more_body": False}
    await send(message)
