"""The SSRF guard: where a webhook may be delivered.

A webhook URL is the caller's, the network it is sent from is ours. Loopback, private,
link-local (169.254.169.254, the cloud metadata service, included), multicast, reserved,
unspecified and any other non-global address, IPv4 and IPv6 (IPv4-mapped too), is
refused unless ``[webhooks] allow_networks`` lists its network; so is 6to4
(``2002::/16``), which carries an IPv4 address inside. A name is resolved once and the
connection made to the addresses that were checked (the deliverer resolves through
:class:`Guard` itself), so a DNS answer cannot change between the check and the connection.

What an address is, the guard alone decides, with the system's resolver: ``127.1`` and
``2130706433`` are 127.0.0.1 to it as to the socket that would connect. The deliverer checks
every socket's address once more as it connects (:meth:`Guard.check_connect`), whatever
its HTTP client took for a literal.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

from conveyor.errors import ConveyorError

Address = IPv4Address | IPv6Address
RESOLVE_TIMEOUT = 5.0


class RefusedAddressError(ConveyorError):
    """The webhook's host is, or resolves to, an address the guard refuses."""


SIX_TO_FOUR = ip_network("2002::/16")


def _kind(ip: Address) -> str | None:
    """Why ``ip`` is not an address on the internet (None: it is one)."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return _kind(ip.ipv4_mapped)
    if ip in SIX_TO_FOUR:
        return "a 6to4 (an IPv4 address inside IPv6)"
    for kind, refused in (
        ("an unspecified", ip.is_unspecified),
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("a reserved", ip.is_reserved),
        ("a private", ip.is_private),
        ("a non-global", not ip.is_global),
    ):
        if refused:
            return kind
    return None


@dataclass(frozen=True)
class Guard:
    """Which addresses webhooks may reach; ``allow`` lists CIDRs let through anyway."""

    allow: tuple[str, ...] = ()

    def refusal(self, ip: Address) -> str | None:
        """Why a delivery to ``ip`` is refused, or None."""
        kind = _kind(ip)
        if kind is None or any(ip in ip_network(net, strict=False) for net in self.allow):
            return None
        return (
            f"{ip} is {kind} address; webhooks go to public addresses only (or list its"
            " network in [webhooks] allow_networks)"
        )

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address ``host`` (a name or any form of address) stands for, all allowed,
        or RefusedAddressError."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise RefusedAddressError(f"{host} does not resolve: {exc}") from None
        except UnicodeError:
            raise RefusedAddressError(f"{host!r} is not a valid host name") from None
        return self._checked(host, infos)

    def check_connect(self, host: str) -> None:
        """The last look, as a socket connects to ``host``: an address in any spelling the
        system reads as one (never a DNS look-up), allowed; else RefusedAddressError."""
        try:
            infos = socket.getaddrinfo(
                host.strip("[]"), None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except (OSError, UnicodeError):
            raise RefusedAddressError(
                f"{host!r}: a connection goes to a checked address only"
            ) from None
        self._checked(host, infos)

    def _checked(self, host: str, infos: list[Any]) -> list[Address]:
        found = list(dict.fromkeys(ip_address(info[4][0].split("%")[0]) for info in infos))
        for ip in found:
            if (why := self.refusal(ip)) is not None:
                via = "" if host.strip("[]") == str(ip) else f"{host} resolves to "
                raise RefusedAddressError(via + why)
        return found
