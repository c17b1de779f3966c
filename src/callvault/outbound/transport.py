"""The connection-time address check for every connection callvault makes to a customer URL.

`addresses.refuse_reason` checks a URL when it is configured, but a name can resolve to a public
address then and to 127.0.0.1 a minute later (DNS rebinding). So whoever connects (the webhook
client in post_client.py, the egress guard for storage, the storage endpoint check) resolves
the host here, checks every address it got, and connects to exactly an address it checked; the
URL's host still goes into the Host header and TLS SNI/certificate checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpcore

from callvault.outbound.addresses import is_public_address

# resolves (host, port) to IP address strings; injectable so tests can simulate a rebinding name
Resolver = Callable[[str, int], Awaitable[list[str]]]


class PolicyRefusal(httpcore.ConnectError):
    """Raised by `checked_addresses`: an address the policy does not allow. A ConnectError, so
    that code connecting for a library (the egress guard, the storage endpoint check) fails the
    way that library expects of a connection that could not be made."""


# name resolution runs in a thread (getaddrinfo) with no deadline of its own: bounded here, so
# a dead resolver fails a webhook or a storage request instead of holding it
DNS_TIMEOUT_SECS = 5.0


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses; TimeoutError (an OSError) after DNS_TIMEOUT_SECS."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DNS_TIMEOUT_SECS):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # keep the resolver's order (it sorts by preference), drop duplicates
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refused_detail(host: str, address: str) -> str:
    return (
        f"refused to connect to {host}: it resolves to {address}, which is not a public address "
        "(set CALLVAULT_ALLOW_PRIVATE_NETWORKS=true to allow private networks)"
    )


async def checked_addresses(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = system_resolver
) -> list[str]:
    """The addresses to connect to for `host`; raises `PolicyRefusal` when one is not public,
    httpcore.ConnectError when the name does not resolve.

    Any non-public address refuses the host as a whole, instead of skipping it: a name that mixes
    public and private answers is either misconfigured or an attack.
    """
    literal = host.strip("[]")
    if _is_ip_literal(literal):
        addresses = [literal]
    else:
        try:
            addresses = await resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
    if not allow_private:
        for address in addresses:
            try:
                public = is_public_address(address)
            except ValueError:
                public = False
            if not public:
                raise PolicyRefusal(refused_detail(host, address))
    return addresses


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
