"""The SSRF guard: where the platform may connect for a caller (webhooks, URL inputs).

A webhook's or a URL input's address is the caller's, the network it is reached from is
ours. Loopback, private,
link-local (169.254.169.254, the cloud metadata service, included), multicast, reserved,
unspecified and any other non-global address, IPv4 and IPv6 (IPv4-mapped too), is
refused unless the guard's ``allow`` (``[webhooks]`` or ``[files] allow_networks``) lists
its network; so is 6to4
(``2002::/16``), which carries an IPv4 address inside. A name is resolved once and the
connection made to the addresses that were checked (aiohttp resolves through
:class:`GuardedResolver`), so a DNS answer cannot change between the check and the connection.

What an address is, the guard alone decides, with the system's resolver: ``127.1`` and
``2130706433`` are 127.0.0.1 to it as to the socket that would connect. The deliverer checks
every socket's address once more as it connects (:meth:`Guard.check_connect`, through
:func:`guarded_connector`), whatever its HTTP client took for a literal.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType

from conveyor.errors import ConveyorError

Address = IPv4Address | IPv6Address
RESOLVE_TIMEOUT = 5.0


class RefusedAddressError(ConveyorError):
    """The host is, or resolves to, an address the guard refuses."""


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
    """Which addresses may be reached; ``allow`` lists CIDRs let through anyway, and
    ``setting`` names where (in a refusal's message)."""

    allow: tuple[str, ...] = ()
    setting: str = "[webhooks] allow_networks"
    what: str = "webhooks go"

    def refusal(self, ip: Address) -> str | None:
        """Why a delivery to ``ip`` is refused, or None."""
        kind = _kind(ip)
        if kind is None or any(ip in ip_network(net, strict=False) for net in self.allow):
            return None
        return (
            f"{ip} is {kind} address; {self.what} to public addresses only (or list its"
            f" network in {self.setting})"
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


class GuardedResolver(AbstractResolver):
    """aiohttp's name resolution through the guard: the addresses it checked are the ones
    aiohttp connects to."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self.guard.resolve(host, port)
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in addresses
        ]

    async def close(self) -> None:
        return None


def guarded_connector(guard: Guard, *, limit: int = 100) -> aiohttp.TCPConnector:
    """An aiohttp connector that reaches only what ``guard`` allows: names resolve through
    it, and every socket is made for an address it allows (a host aiohttp takes for an IP
    literal, ``2130706433``, skips the resolver, not this)."""

    def guarded_socket(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, address = addr_info
        guard.check_connect(str(address[0]))
        return socket.socket(family, kind, proto)

    return aiohttp.TCPConnector(
        resolver=GuardedResolver(guard),
        use_dns_cache=False,
        limit=limit,
        socket_factory=guarded_socket,
    )
