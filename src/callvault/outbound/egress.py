"""The egress guard: one loopback proxy that every storage client connects through.

The storage SDKs (obstore in Rust, azure-storage-blob and google-cloud-storage on requests, boto3
for STS) resolve names and follow redirects on their own, with no hook between resolution and
connect. Checking a host before a request leaves them free to connect elsewhere afterwards: to a
redirect's target, to a subdomain, or to a name that resolves differently the second time (DNS
rebinding). So none of them connects by itself: each is pointed at this proxy, which

- takes `CONNECT host:port` (https) and absolute-form requests (`GET http://host/path`, plain
  http), for every connection the client opens, redirects included;
- resolves the name itself, checks every address with the policy of `addresses.py` (the same as
  webhooks: `transport.checked_addresses`), and connects to exactly the address it checked;
- answers a refused connection with 403 and a body naming the policy, so the client fails
  instead of reaching the address.

Plain-http requests are framed by h11 and kept alive on both sides while they go to the same
host and port (plain_http.py). TLS goes end to end through CONNECT, so the client still checks
the certificate of the name it asked for.

The proxy listens on 127.0.0.1 with a random port and asks for no password: it lets nobody reach
anything they could not reach without it (a local process can connect to public addresses and to
the operator's endpoints on its own), and HTTP clients drop Proxy-Authorization when they follow
a redirect to another host. It runs its own event loop in a daemon thread: clients that block a
thread (the Azure and GCS SDKs) and the service's loop alike reach it, and a busy service loop
does not stall it.

Hosts the operator configured (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_STS, CALLVAULT_STS_ENDPOINTS,
CALLVAULT_AZURE_BLOB_ENDPOINT, STORAGE_EMULATOR_HOST) are `trusted`: they may be on a private
network, by the operator's choice. Only the exact host and port: a redirect elsewhere, a
subdomain, is checked as any other. The guard reads no environment: the stores that use it
name those endpoints (storage/settings.py `operator_endpoints`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import h11
import httpcore

from callvault.outbound.addresses import default_port
from callvault.outbound.plain_http import (
    BadRequest,
    EndpointFailed,
    Peer,
    answerable,
    serve,
)
from callvault.outbound.transport import (
    PolicyRefusal,
    Resolver,
    checked_addresses,
    system_resolver,
)

HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT_SECS = 30.0
CONNECT_TIMEOUT_SECS = 5.0
PIPE_CHUNK = 256 * 1024
# a body that names the policy: it reaches logs and errors through the client's message
REFUSED_PREFIX = "callvault egress policy"


def trusted_endpoints(endpoints: Iterable[str]) -> frozenset[tuple[str, int]]:
    """(host, port) of every endpoint the operator configured (comma-separated values too;
    empty ones are skipped)."""
    trusted: set[tuple[str, int]] = set()
    for endpoint in endpoints:
        for raw in endpoint.split(","):
            value = raw.strip()
            if not value:
                continue
            if "://" not in value:  # STORAGE_EMULATOR_HOST may be host:port
                value = "http://" + value
            try:
                parts = urlsplit(value)
                port = parts.port or default_port(parts.scheme)
            except ValueError:
                continue
            # a template such as https://{account_name}.blob... trusts nothing by name
            if parts.hostname and "{" not in parts.hostname:
                trusted.add((parts.hostname.lower(), port))
    return frozenset(trusted)


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


def parse_head(raw: bytes) -> RequestHead:
    """The request line and headers of `raw` (up to and including the blank line)."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest("undecodable request") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header")
        headers.append((name, value.strip()))
    return RequestHead(parts[0], parts[1], parts[2], headers)


def connect_target(head: RequestHead) -> tuple[str, int]:
    """(host, port) of a CONNECT request."""
    host, sep, port_text = head.target.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadRequest("CONNECT needs host:port")
    return host.strip("[]"), int(port_text)


def _answer(status: str, body: str) -> bytes:
    data = body.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + data


def no_delay(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY on the connection under `writer`. The proxy writes a head and then a body in
    two sends; with Nagle's algorithm the second waits for the peer's ACK of the first, which a
    delayed ACK holds for 40 ms. asyncio's own transports set it, other loops need not."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(PIPE_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


@dataclass
class EgressProxy:
    """The guard. `start()` it once; `url` is what clients take as their proxy."""

    allow_private: bool
    resolver: Resolver = system_resolver
    trusted: frozenset[tuple[str, int]] = frozenset()
    port: int = 0
    refused: int = 0  # connections refused by the policy (for tests and metrics)
    connected: int = 0  # connections made to a checked address
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0, limit=HEAD_LIMIT)
                )
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, name="callvault-egress", daemon=True).start()
        ready.wait()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shut() -> None:
            server.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), loop)

    async def open_checked(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to `host:port` at an address the policy allows (PolicyRefusal if none)."""
        allow = self.allow_private or (host.lower(), port) in self.trusted
        async with asyncio.timeout(CONNECT_TIMEOUT_SECS):
            addresses = await checked_addresses(
                host, port, allow_private=allow, resolver=self.resolver
            )
        last: OSError | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECS):
                    reader, writer = await asyncio.open_connection(address, port, limit=HEAD_LIMIT)
                no_delay(writer)
                return reader, writer
            except (OSError, TimeoutError) as exc:
                last = exc if isinstance(exc, OSError) else OSError(str(exc))
        raise last or OSError(f"cannot connect to {host}")

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        no_delay(client_w)
        client: Peer | None = None
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_SECS):
                raw = await client_r.readuntil(b"\r\n\r\n")
            head = parse_head(raw)
            if head.method == "CONNECT":
                await self._tunnel(head, client_r, client_w)
            else:
                client = Peer(h11.Connection(h11.SERVER, HEAD_LIMIT), client_r, client_w)
                client.conn.receive_data(raw)
                await serve(client, partial(self._open_plain, client_w), HEAD_TIMEOUT_SECS)
        except EndpointFailed as exc:
            if client is not None and answerable(client):
                client_w.write(_answer("502 Bad Gateway", f"the endpoint failed: {exc}"))
        except (
            BadRequest,
            h11.ProtocolError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            if client is None or answerable(client):
                client_w.write(_answer("400 Bad Request", f"{REFUSED_PREFIX}: {exc}"))
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                await client_w.drain()
            await _close(client_w)

    async def _upstream(
        self, host: str, port: int, client_w: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await self.open_checked(host, port)
        except PolicyRefusal as exc:
            self.refused += 1
            # the reason phrase names the policy too: a client that reports a refused CONNECT
            # shows the status line, not the body
            client_w.write(
                _answer(f"403 Forbidden by {REFUSED_PREFIX}", f"{REFUSED_PREFIX}: {exc}")
            )
        except (httpcore.ConnectError, OSError, TimeoutError) as exc:
            client_w.write(_answer("502 Bad Gateway", f"cannot connect to {host}: {exc}"))
        return None

    async def _tunnel(
        self, head: RequestHead, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        host, port = connect_target(head)
        upstream = await self._upstream(host, port, client_w)
        if upstream is None:
            return
        self.connected += 1
        up_r, up_w = upstream
        client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await client_w.drain()
        try:
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        finally:
            await _close(up_w)

    async def _open_plain(
        self, client_w: asyncio.StreamWriter, host: str, port: int
    ) -> Peer | None:
        """A checked connection for plain-http requests to `host:port` (None: refused, and
        the client answered)."""
        upstream = await self._upstream(host, port, client_w)
        if upstream is None:
            return None
        self.connected += 1
        up_r, up_w = upstream
        return Peer(h11.Connection(h11.CLIENT, HEAD_LIMIT), up_r, up_w)


_shared: dict[bool, EgressProxy] = {}
_shared_lock = threading.Lock()


def shared_proxy(*, allow_private: bool, trusted: Iterable[str] | None = None) -> EgressProxy:
    """This process's guard for the policy `allow_private` (started on first use). `trusted`:
    the operator's endpoints, given again as each store opens (None: keep the last ones)."""
    hosts = None if trusted is None else trusted_endpoints(trusted)
    with _shared_lock:
        proxy = _shared.get(allow_private)
        if proxy is None:
            proxy = EgressProxy(allow_private=allow_private, trusted=hosts or frozenset())
            proxy.start()
            _shared[allow_private] = proxy
        if hosts is not None:
            proxy.trusted = hosts
        return proxy


def proxy_url_for(allow_private_networks: bool, trusted: Iterable[str]) -> str:
    """The proxy URL a customer store's client must use; `trusted`: the operator's endpoints
    (storage/settings.py `operator_endpoints`)."""
    return shared_proxy(allow_private=allow_private_networks, trusted=trusted).url
