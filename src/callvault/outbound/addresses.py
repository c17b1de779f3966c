"""Which URLs callvault may send requests to.

Webhook URLs and s3-generic endpoints are chosen by customers, so without a policy any customer
could make callvault talk to the platform's own private network (metadata services, databases,
admin ports). Unless `CALLVAULT_ALLOW_PRIVATE_NETWORKS` is set, a URL is refused when its host is,
or resolves to, an address that is not publicly routable.

This is the check at configuration time. A name that does not resolve yet is accepted (DNS may be
set up after the application), so the connection itself must check the address again (DNS
rebinding); that check belongs to the code that connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

ALLOWED_SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECS = 3.0
# roughly what url_shape_error accepts, for OpenAPI readers (it checks more: host, port)
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+([/?#]\S*)?$"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# carrier-grade NAT space: not "private" in the ipaddress module, yet never a customer's server
# (cloud providers put internal services there, e.g. 100.100.100.200)
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# ranges Python 3.11's is_global misses: deprecated site-local (RFC 3879), still routed inside
# some sites, and the IPv6 documentation range of RFC 9637 (2024)
_NOT_GLOBAL_V6 = (ipaddress.IPv6Network("fec0::/10"), ipaddress.IPv6Network("3fff::/20"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress | str) -> bool:
    """True when `ip` is a publicly routable unicast address.

    Refused: loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16,
    fe80::/10), unspecified, multicast, carrier-grade NAT, reserved and documentation ranges,
    and IPv6 forms that embed one of those IPv4 addresses (::ffff:10.0.0.1, 6to4, NAT64).
    """
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:  # fe80::1%eth0 and the like: always interface-local
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
        if any(address in network for network in _NOT_GLOBAL_V6):
            return False
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE:
        return False
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or not address.is_global
    )


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def url_shape_error(url: str) -> str | None:
    """Why `url` is not an absolute http(s) URL with a host, or None. Pure, no I/O."""
    if len(url) > MAX_URL_LENGTH:
        return f"the URL must be at most {MAX_URL_LENGTH} characters long"
    if any(ch.isspace() for ch in url):
        return "the URL must not contain whitespace"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "the URL is not valid"
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return "the URL must start with http:// or https://"
    if not parts.hostname:
        return "the URL must name a host"
    if parts.username is not None or parts.password is not None:
        # credentials in a URL end up in logs and Referer headers
        return "the URL must not contain a user name or password"
    return None


def _host_address(parts: SplitResult) -> IPAddress | None:
    host = parts.hostname or ""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[IPAddress] | None:
    """The addresses `host` resolves to now, or None when it does not resolve (yet)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECS
        )
    except (OSError, TimeoutError, UnicodeError):
        return None
    addresses: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]
        try:
            addresses.append(ipaddress.ip_address(raw))
        except ValueError:
            continue
    return addresses


# appended to a refusal: whose rule it is and the setting that changes it
POLICY = (
    ", which this server's policy refuses (its operator can allow private networks with "
    "CALLVAULT_ALLOW_PRIVATE_NETWORKS=true)"
)


async def refuse_reason(url: str, *, allow_private: bool) -> str | None:
    """Why callvault must not send requests to `url`, or None when it may.

    Only http and https URLs are accepted. Unless `allow_private`, the host must not be a
    non-public address (see `is_public_address`) nor a name that currently resolves to one.
    A name that does not resolve is accepted: the connection checks again.
    """
    shape = url_shape_error(url)
    if shape is not None:
        return shape
    if allow_private:
        return None
    parts = urlsplit(url)
    literal = _host_address(parts)
    if literal is not None:
        if not is_public_address(literal):
            return "the URL's host is a private, loopback or otherwise non-public address" + POLICY
        return None
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    resolved = await _resolve(host, port)
    if resolved and not all(is_public_address(address) for address in resolved):
        return (
            "the URL's host resolves to a private, loopback or otherwise non-public address"
            + POLICY
        )
    return None
