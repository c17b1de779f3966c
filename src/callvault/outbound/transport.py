"""The connection-time address check for every HTTP request callvault sends to a customer URL.

`addresses.refuse_reason` checks a URL when it is configured, but a name can resolve to a public
address then and to 127.0.0.1 a minute later (DNS rebinding). So the connection resolves the host
itself, checks every address it got, and connects to exactly the address it checked; the URL's
host still goes into the Host header and TLS SNI/certificate checks (httpcore takes those from
the URL, not from the socket).

Other rules for customer URLs: only http and https, redirects are never followed (a redirect
would lead to an address nobody checked), and proxies from the environment are ignored (a proxy
would resolve the name on its side, after our check).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable

import anyio
import httpcore
import httpx
from httpcore._utils import is_socket_readable

from callvault.outbound.addresses import ALLOWED_SCHEMES, is_public_address

# resolves (host, port) to IP address strings; injectable so tests can simulate a rebinding name
Resolver = Callable[[str, int], Awaitable[list[str]]]


class AddressRefused(httpx.ConnectError):
    """The request would have gone to a private, loopback or otherwise non-public address."""


class PolicyRefusal(httpcore.ConnectError):
    """Raised by `checked_addresses` (inside httpcore: GuardedTransport turns it back into
    AddressRefused, as httpx maps every httpcore.ConnectError to a plain httpx.ConnectError)."""


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


# Linux only; elsewhere delayed ACKs stay as the system has them
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class CoalescingStream(httpcore.AsyncNetworkStream):
    """httpcore's stream with a request's head and body in one send, answers acknowledged at
    once, and a cheap readability check.

    httpcore writes a request's head and its body separately: two sends, two segments, and a
    pass each through anyio's send path. A write is held here until the next write (then both
    go together), read, close or TLS start. httpcore checks whether an idle pooled connection
    is readable before each reuse, and anyio builds a dict of every socket attribute for that;
    the socket is looked up once here instead."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")
        self._held = b""

    async def _flush(self, within: float | None) -> None:
        if self._held:
            held, self._held = self._held, b""
            await self._inner.write(held, timeout=within)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not self._held:
            self._held = buffer
            return
        held, self._held = self._held, b""
        await self._inner.write(held + buffer, timeout=timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await self._flush(timeout)
        self._quick_ack()
        return await self._inner.read(max_bytes, timeout=timeout)

    def _quick_ack(self) -> None:
        """Acknowledge what arrives at once (Linux resets this after a while, so it is set
        before each read). A receiver with Nagle's algorithm on (http.server, among many) that
        writes its answer's head and body in two sends holds the body until the head is
        acknowledged, and a delayed ACK waits 40 ms: every webhook round took 40 ms more."""
        if QUICKACK is not None and self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)

    async def aclose(self) -> None:
        self._held = b""  # a request given up: nothing more goes out on this connection
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        await self._flush(timeout)
        return CoalescingStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> object:
        if info == "is_readable":
            return is_socket_readable(self._socket)
        if info == "socket":
            return self._socket
        return self._inner.get_extra_info(info)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer with the address check between name resolution and connect."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await checked_addresses(
                    host, port, allow_private=self.allow_private, resolver=self.resolver
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        last_error: Exception | None = None
        for address in addresses:  # the first one that answers, like a plain connect
            try:
                stream = await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return CoalescingStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed for customer URLs")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` whose connections pass the address check (never a proxy)."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | str | bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),
    ) -> None:
        # not super().__init__(): it builds a pool without a network_backend parameter
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(allow_private=allow_private, resolver=resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ALLOWED_SCHEMES:
            raise httpx.UnsupportedProtocol(
                f"only http and https URLs are allowed, not {request.url.scheme!r}",
                request=request,
            )
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectError as exc:
            if isinstance(exc.__cause__, PolicyRefusal):
                raise AddressRefused(str(exc), request=request) from exc.__cause__
            raise


def outbound_client(
    *,
    allow_private: bool,
    timeout: httpx.Timeout | float = 10.0,
    resolver: Resolver = system_resolver,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """The client for requests to customer URLs: checked addresses, no redirects, no env proxies."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=allow_private, resolver=resolver),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers=headers,
    )
