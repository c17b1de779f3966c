"""Small POSTs to customer URLs (webhooks) over kept-alive HTTP/1.1 connections, each one's
address checked where it is made.

The rules are those of every request to a customer URL: http and https only, a redirect never
followed (a 3xx is the answer), no proxy (a proxy would resolve the name after our check), the
address checked between name resolution and connect (`transport.checked_addresses`: a name can
rebind to 127.0.0.1 after it was configured), the URL's host in the Host header and in TLS's SNI
and certificate check. h11 frames both directions.

Why not httpx: a webhook is one small request and a small answer, and httpx's client, httpcore's
pool and anyio's streams around h11 cost more CPU than the exchange (docs/performance.md,
"Eighth pass"). Here a connection is an asyncio protocol and the pool a list per host.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import cast
from urllib.parse import quote, urlsplit

import h11
import httpcore

from callvault.outbound.addresses import default_port, url_shape_error
from callvault.outbound.transport import PolicyRefusal, Resolver, checked_addresses, system_resolver

# an idle connection older than this is closed rather than reused: under the 5 s after which
# common receivers (Node.js's default) close theirs, so that a reuse does not race their FIN
IDLE_EXPIRY_SECS = 4.0
MAX_IDLE_CONNECTIONS = 20
# reading stops while this much of an answer waits unread (the rest stays in the kernel)
READ_PAUSE_BYTES = 256 * 1024
# Linux only; elsewhere delayed ACKs stay as the system has them
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class Phase(StrEnum):
    CONNECT = "connect"
    ANSWER = "waiting for the answer"


class PostFailed(Exception):
    """The request got no answer. Its text is ours and names no URL; what the network said is
    its __cause__."""


class ConnectFailed(PostFailed):
    """No connection: the name, the TCP connect or the TLS handshake failed."""


class ExchangeBroken(PostFailed):
    """Connected, but the answer's head never came whole: the peer closed, reset or broke
    HTTP."""


class UnsupportedURL(PostFailed):
    """Not an http or https URL with a host (or one carrying a user name or password)."""


class PhaseTimeout(PostFailed):
    def __init__(self, phase: Phase, limit_secs: float) -> None:
        super().__init__(f"timed out after {limit_secs:g} s ({phase})")
        self.phase = phase
        self.limit_secs = limit_secs


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]  # as the receiver wrote them
    body: bytes  # what was read of it within the wait and size limits (not always all)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # for the connect, SNI and the certificate: no brackets, lowercase
    port: int
    authority: bytes  # the Host header
    path: bytes

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def target_of(url: str) -> Target:
    """Where a URL's request goes (pure); UnsupportedURL when it cannot go anywhere allowed
    (the rules a URL is saved under: `addresses.url_shape_error`)."""
    reason = url_shape_error(url)
    if reason is not None:
        raise UnsupportedURL(reason)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        scheme=parts.scheme,
        host=parts.hostname or "",
        port=default_port(parts.scheme) if parts.port is None else parts.port,
        authority=parts.netloc.encode("idna"),
        # a configured URL is ASCII already; percent-encode what is not, keep what is escaped
        path=quote(path, safe="!#$%&'()*+,/:;=?@[]~").encode("ascii"),
    )


class _Wire(asyncio.Protocol):
    """One connection: what arrived, whether it ended, and h11's view of the exchange."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._socket: socket.socket | None = None  # looked up once: every wait sets an option
        self.http = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self._received = bytearray()
        self._ended = False
        self._lost: Exception | None = None
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._socket = transport.get_extra_info("socket")
        self._set_option(socket.TCP_NODELAY)

    def _set_option(self, option: int) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, option, 1)

    def data_received(self, data: bytes) -> None:
        self._received += data
        if len(self._received) > READ_PAUSE_BYTES and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool | None:
        self._ended = True
        self._wake()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._lost = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def read(self) -> bytes:
        """What arrived since the last read; b"" once the peer has closed."""
        while not self._received and not self._ended:
            self._quick_ack()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._received:
            data = bytes(self._received)
            self._received.clear()
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            return data
        if self._lost is not None:
            raise self._lost
        return b""

    def _quick_ack(self) -> None:
        """Acknowledge what arrives at once (Linux resets this after a while, so it is set
        before each wait). A receiver with Nagle's algorithm on that writes its answer's head
        and body in two sends holds the body until the head is acknowledged, and a delayed ACK
        waits 40 ms."""
        if QUICKACK is not None:
            self._set_option(QUICKACK)

    def reusable(self) -> bool:
        """Idle and still open: nothing arrived unasked and the peer has not closed, as far as
        the kernel knows (the loop may not have read its FIN yet)."""
        if self._ended or self._received or self.transport is None:
            return False
        if self.transport.is_closing() or self.http.our_state is not h11.IDLE:
            return False
        return self._socket is None or not _readable(self._socket.fileno())

    def close(self) -> None:
        """An idle connection, let go with a FIN (nothing of ours is left to send)."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """A connection in the middle of an exchange, dropped at once (RST)."""
        if self.transport is not None:
            self.transport.abort()


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


async def _next_event(wire: _Wire) -> h11.Event:
    while True:
        event = wire.http.next_event()
        if event is h11.NEED_DATA:
            wire.http.receive_data(await wire.read())
            continue
        if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            raise ExchangeBroken("the receiver closed the connection")
        return cast(h11.Event, event)


class PostClient:
    """POSTs with kept-alive connections per scheme, host and port; one per worker."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Wire]] = {}

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            import certifi  # the CA bundle httpx trusted, so a receiver trusted before still is

            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        return self._ssl_context

    async def aclose(self) -> None:
        for wires in self._idle.values():
            for wire in wires:
                wire.close()
        self._idle.clear()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Iterable[tuple[str, str]],
        *,
        connect_timeout: float,
        answer_timeout: float,
        answer_wait: float,
        keep_bytes: int,
    ) -> Answer:
        """Send; await the answer's head for `answer_timeout` after the request has gone; then
        read its body for at most `answer_wait` and `keep_bytes`, so that a small answer leaves
        its connection reusable. Raises PolicyRefusal for an address the policy refuses, and a
        PostFailed for every other failure."""
        target = target_of(url)
        wire = self._idle_wire(target) or await self._connect(target, connect_timeout)
        done = False
        try:
            request = h11.Request(
                method="POST",
                target=target.path,
                headers=[
                    (b"host", target.authority),
                    (b"content-length", str(len(body)).encode()),
                    *((name.encode(), value.encode()) for name, value in headers),
                ],
            )
            http = wire.http
            wire.send(
                http.send(request) + http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())
            )
            head = await _answer_head(wire, answer_timeout)
            kept, done = await _answer_body(wire, answer_wait, keep_bytes)
        except (h11.ProtocolError, OSError) as exc:
            raise ExchangeBroken("the exchange broke") from exc
        finally:
            self._put_back(target, wire, answered_whole=done)
        return Answer(status=head.status_code, headers=list(head.headers.raw_items()), body=kept)

    def _idle_wire(self, target: Target) -> _Wire | None:
        wires = self._idle.get(target.key)
        now = time.monotonic()
        while wires:
            wire = wires.pop()
            if now - wire.idle_since < IDLE_EXPIRY_SECS and wire.reusable():
                return wire
            wire.close()
        return None

    def _put_back(self, target: Target, wire: _Wire, *, answered_whole: bool) -> None:
        http = wire.http
        if answered_whole and http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
            wire.idle_since = time.monotonic()
            self._idle.setdefault(target.key, []).append(wire)
            if sum(map(len, self._idle.values())) > MAX_IDLE_CONNECTIONS:
                self._close_oldest_idle()
        else:
            wire.abort()

    def _close_oldest_idle(self) -> None:
        # each host's list is oldest first: the oldest of all heads one of them
        key = min((wires[0].idle_since, key) for key, wires in self._idle.items() if wires)[1]
        self._idle[key].pop(0).close()

    async def _connect(self, target: Target, limit_secs: float) -> _Wire:
        """Resolve, check every address, connect to the first that answers (TLS named by the
        URL's host, not the address)."""
        loop = asyncio.get_running_loop()
        tls = self._tls() if target.scheme == "https" else None
        try:
            async with asyncio.timeout(limit_secs):
                addresses = await checked_addresses(
                    target.host,
                    target.port,
                    allow_private=self.allow_private,
                    resolver=self.resolver,
                )
                failure: Exception | None = None
                for address in addresses:
                    try:
                        _, wire = await loop.create_connection(
                            _Wire,
                            address,
                            target.port,
                            ssl=tls,
                            server_hostname=target.host if tls is not None else None,
                            ssl_handshake_timeout=limit_secs if tls is not None else None,
                        )
                        return wire
                    except OSError as exc:
                        failure = exc
        except PolicyRefusal:
            raise
        except TimeoutError as exc:
            raise PhaseTimeout(Phase.CONNECT, limit_secs) from exc
        except httpcore.ConnectError as exc:  # from checked_addresses: the name did not resolve
            raise ConnectFailed("name does not resolve") from exc
        except OSError as exc:
            raise ConnectFailed("could not connect") from exc
        raise ConnectFailed("could not connect") from failure


async def _answer_head(wire: _Wire, limit_secs: float) -> h11.Response:
    """The answer's status and headers (a 1xx skipped), within the receiver's time to answer."""
    try:
        async with asyncio.timeout(limit_secs):
            while True:
                event = await _next_event(wire)
                if isinstance(event, h11.Response):
                    return event
    except TimeoutError as exc:
        raise PhaseTimeout(Phase.ANSWER, limit_secs) from exc


async def _answer_body(wire: _Wire, limit_secs: float, keep_bytes: int) -> tuple[bytes, bool]:
    """(the body as far as read, whether it was read to its end). A large, slow or broken answer
    is let go (and its connection with it): the status decided already."""
    kept = bytearray()
    try:
        async with asyncio.timeout(limit_secs):
            while len(kept) <= keep_bytes:
                event = await _next_event(wire)
                if isinstance(event, h11.Data):
                    kept += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(kept), True
    except (TimeoutError, PostFailed, h11.ProtocolError, OSError):
        pass
    return bytes(kept), False
