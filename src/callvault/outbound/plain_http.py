"""Plain-http requests through the egress guard, kept alive on both sides.

A client's connection to the guard carries one request after another; the guard keeps its
connection to the endpoint between them while they go to the same host and port, and opens a new
checked one when the host or port changes (a redirect elsewhere) or the endpoint closed, so a
customer store's puts and heads do not each pay a new connection on both sides.

h11 frames every message on both sides, so a body ends where its Content-Length or last chunk
says, never where a byte pipe would guess; messages it cannot frame unambiguously are refused
rather than passed on. After an exchange that did not end cleanly on either side (an early
answer before the body was sent, a peer that closed) the client's connection is closed, as a
proxy that cannot tell where the next request starts must.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from callvault.outbound.addresses import default_port

READ_CHUNK = 256 * 1024
# the longest an endpoint may keep the guard waiting for its next bytes
UPSTREAM_IDLE_SECS = 300.0

# hop-by-hop headers a forward proxy must not pass on (RFC 9110 7.6.1), and our own credentials
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    }
)


class BadRequest(Exception):
    """The client sent something the proxy does not forward."""


class EndpointFailed(Exception):
    """The endpoint broke off or broke the protocol while answering."""


def _end_to_end(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept = [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]
    if any(name.lower() == b"transfer-encoding" for name, _ in kept):
        # an intermediary drops a length beside chunked framing before forwarding (RFC 9112 6.3)
        kept = [(name, value) for name, value in kept if name.lower() != b"content-length"]
    return kept


def upstream_request(request: h11.Request) -> tuple[str, int, h11.Request]:
    """(host, port, the request in origin form) for an absolute-form http request."""
    try:
        parts = urlsplit(request.target.decode("ascii"))
        port = parts.port or default_port(parts.scheme)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("malformed request target") from exc
    if parts.scheme != "http" or not parts.hostname:
        raise BadRequest("only absolute http:// targets are forwarded (https goes by CONNECT)")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("credentials in the request target")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    names = {name for name, _ in request.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        # RFC 9112 6.3: "ought to be handled as an error"; it is how requests are smuggled
        raise BadRequest("both Transfer-Encoding and Content-Length")
    headers = _end_to_end(list(request.headers.raw_items()))
    if not any(name.lower() == b"host" for name, _ in headers):
        headers.insert(0, (b"Host", parts.netloc.encode("ascii")))
    forwarded = h11.Request(method=request.method, target=path, headers=headers)
    return parts.hostname, port, forwarded


def downstream_response(
    response: h11.Response | h11.InformationalResponse,
) -> h11.Response | h11.InformationalResponse:
    """The endpoint's answer as the guard passes it on: its own hop-by-hop headers dropped; the
    framing toward the client is h11's."""
    return type(response)(
        status_code=response.status_code,
        headers=_end_to_end(list(response.headers.raw_items())),
        reason=response.reason,
    )


@dataclass
class Peer:
    """One side of a forwarded exchange: an h11 state machine over its connection."""

    conn: h11.Connection
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def next_event(self, idle_secs: float) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(idle_secs):
                data = await self.reader.read(READ_CHUNK)
            self.conn.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send_with_data_passthrough(event)
        if data:
            self.writer.writelines(data)
            await self.writer.drain()

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE


async def _relay_body(client: Peer, upstream: Peer) -> None:
    """The request's body, client to endpoint, up to its end."""
    while True:
        event = await client.next_event(UPSTREAM_IDLE_SECS)
        if isinstance(event, h11.Data | h11.EndOfMessage):
            try:
                await upstream.send(event)
            except OSError as exc:
                raise EndpointFailed(str(exc)) from exc
        if not isinstance(event, h11.Data):
            return


async def _endpoint_event(upstream: Peer) -> object:
    try:
        event = await upstream.next_event(UPSTREAM_IDLE_SECS)
    except (h11.ProtocolError, OSError, TimeoutError) as exc:
        raise EndpointFailed(str(exc) or type(exc).__name__) from exc
    if isinstance(event, h11.ConnectionClosed):
        raise EndpointFailed("the endpoint closed before its answer ended")
    return event


async def _relay_response(upstream: Peer, client: Peer) -> None:
    """The endpoint's answers (interim ones included), endpoint to client, up to the end of the
    final one's body."""
    while True:
        event = await _endpoint_event(upstream)
        if isinstance(event, h11.InformationalResponse | h11.Response):
            await client.send(downstream_response(event))
        elif isinstance(event, h11.Data | h11.EndOfMessage):
            await client.send(event)
        if isinstance(event, h11.EndOfMessage):
            return


async def relay(client: Peer, upstream: Peer, request: h11.Request) -> None:
    """One request and its answer. The body goes up while the answer comes down, so interim
    answers (100 Continue) and early final ones reach the client."""
    try:
        await upstream.send(request)
    except OSError as exc:
        raise EndpointFailed(str(exc)) from exc
    body = asyncio.ensure_future(_relay_body(client, upstream))
    response = asyncio.ensure_future(_relay_response(upstream, client))
    try:
        await asyncio.wait({body, response}, return_when=asyncio.FIRST_COMPLETED)
        if body.done() and body.exception() is not None:
            body.result()  # the request broke off: no point waiting for an answer
        await response
    finally:
        body.cancel()
        response.cancel()


# opens a checked connection to (host, port), or answers the client and returns None
OpenUpstream = Callable[[str, int], Awaitable[Peer | None]]


def answerable(client: Peer) -> bool:
    """Whether nothing of an answer went to the client yet in this exchange, so an error answer
    can still be written before closing."""
    return client.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)


def _stale(upstream: Peer) -> bool:
    # an endpoint that closed its idle side: a new request on it would fail
    return upstream.reader.at_eof() or upstream.writer.is_closing()


async def serve(client: Peer, open_upstream: OpenUpstream, head_timeout_secs: float) -> None:
    """Every request the client sends on its connection, each to its endpoint, until either
    side cannot go on. Raises BadRequest and h11.ProtocolError (the client's fault) and
    EndpointFailed for the caller to answer while `answerable`."""
    upstream: Peer | None = None
    address: tuple[str, int] | None = None
    try:
        while True:
            event = await client.next_event(head_timeout_secs)
            if not isinstance(event, h11.Request):
                return  # the client closed, or pipelined past what it may
            host, port, request = upstream_request(event)
            if upstream is None or address != (host, port) or _stale(upstream):
                if upstream is not None:
                    upstream.writer.close()
                upstream, address = await open_upstream(host, port), (host, port)
                if upstream is None:
                    return
            await relay(client, upstream, request)
            if not client.reusable:
                return
            client.conn.start_next_cycle()
            if upstream.reusable:
                upstream.conn.start_next_cycle()
            else:
                upstream.writer.close()
                upstream = None
    finally:
        if upstream is not None:
            upstream.writer.close()
