"""The egress guard (outbound/egress.py): its pure parts, and a real proxy on loopback that
refuses non-public addresses for plain requests and CONNECT alike, and forwards what the
operator trusts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import h11
import httpx
import pytest

from callvault.outbound.egress import (
    REFUSED_PREFIX,
    BadRequest,
    EgressProxy,
    connect_target,
    parse_head,
    trusted_endpoints,
)
from callvault.outbound.plain_http import upstream_request
from tests.security.receiver import Receiver


def request(head: bytes) -> h11.Request:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


def test_upstream_request_drops_hop_by_hop_headers_and_keeps_the_host():
    host, port, forwarded = upstream_request(
        request(
            b"PUT http://store.example:9000/b/k?x=1 HTTP/1.1\r\nHost: store.example:9000\r\n"
            b"Proxy-Authorization: Basic eA==\r\nConnection: keep-alive\r\n"
            b"X-Amz-Date: 20261206T000000Z\r\nContent-Length: 3\r\n\r\n"
        )
    )
    assert (host, port) == ("store.example", 9000)
    assert forwarded.target == b"/b/k?x=1"
    assert list(forwarded.headers.raw_items()) == [
        (b"Host", b"store.example:9000"),
        (b"X-Amz-Date", b"20261206T000000Z"),
        (b"Content-Length", b"3"),
    ]
    # HTTP/1.0 may come without a Host: the target's names it
    _, _, bare = upstream_request(request(b"GET http://s.example:81/ HTTP/1.0\r\n\r\n"))
    assert list(bare.headers.raw_items()) == [(b"Host", b"s.example:81")]


@pytest.mark.parametrize(
    "target",
    ["https://store.example/k", "/relative", "http://user:pw@store.example/k", "http://:80/"],
)
def test_upstream_request_refuses_what_it_cannot_check(target: str):
    with pytest.raises(BadRequest):
        upstream_request(request(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))


def test_connect_targets():
    assert connect_target(parse_head(b"CONNECT s.example:443 HTTP/1.1\r\n\r\n")) == (
        "s.example",
        443,
    )
    assert connect_target(parse_head(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n")) == ("::1", 8443)
    for bad in (b"CONNECT s.example HTTP/1.1\r\n\r\n", b"CONNECT s.example:0 HTTP/1.1\r\n\r\n"):
        with pytest.raises(BadRequest):
            connect_target(parse_head(bad))


def test_trusted_endpoints_are_exact_hosts_the_operator_configured():
    trusted = trusted_endpoints(
        [
            "http://127.0.0.1:8333",
            "",
            "https://sts.internal:8443, http://minio.lan",
            "https://{account_name}.blob.core.windows.net",
            "localhost:4443",
        ]
    )
    assert trusted == {
        ("127.0.0.1", 8333),
        ("sts.internal", 8443),
        ("minio.lan", 80),
        ("localhost", 4443),
    }


@pytest.fixture
async def internal() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture
def guard() -> Iterator[EgressProxy]:
    proxy = EgressProxy(allow_private=False)
    proxy.start()
    yield proxy
    proxy.stop()


async def exchange(proxy: EgressProxy, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(request)
    writer.write_eof()  # one request: the guard keeps a connection alive for the next one
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_plain_requests_and_connects_to_loopback_are_refused(guard, internal):
    plain = await exchange(guard, f"GET {internal.url}/secret HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    tunnel = await exchange(guard, f"CONNECT 127.0.0.1:{internal.port} HTTP/1.1\r\n\r\n".encode())
    for answer in (plain, tunnel):
        assert answer.startswith(b"HTTP/1.1 403 Forbidden by " + REFUSED_PREFIX.encode())
    assert internal.received == []
    assert guard.refused == 2


async def test_a_trusted_endpoint_is_forwarded_with_its_host_header(guard, internal):
    guard.trusted = frozenset({("127.0.0.1", internal.port)})
    answer = await exchange(
        guard,
        f"GET {internal.url}/ok HTTP/1.1\r\nHost: store.example\r\n"
        f"Proxy-Connection: keep-alive\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 200")
    [received] = internal.received
    assert received.path == "/ok"
    assert received.headers["host"] == "store.example"
    assert "proxy-connection" not in received.headers
    # a neighbouring port of the same host is not trusted
    other = await exchange(
        guard,
        f"GET http://127.0.0.1:{internal.port + 1}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    )
    assert other.startswith(b"HTTP/1.1 403")


async def test_both_sockets_of_a_forwarded_request_send_without_delay(guard, internal, monkeypatch):
    """Nagle's algorithm on either side of the proxy holds its second send (a body after its
    head) until the peer's ACK, which a delayed ACK holds 40 ms: counted here, not timed."""
    import callvault.outbound.egress as egress

    options: list[int] = []

    def recorded(writer: asyncio.StreamWriter) -> None:
        egress_no_delay(writer)
        sock = writer.get_extra_info("socket")
        options.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    egress_no_delay = egress.no_delay
    monkeypatch.setattr(egress, "no_delay", recorded)
    guard.trusted = frozenset({("127.0.0.1", internal.port)})
    answer = await exchange(guard, f"GET {internal.url}/ok HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200")
    # the client's connection to the proxy, and the proxy's to the endpoint
    assert len(options) == 2 and all(options), options


@dataclass
class KeptAliveEndpoint:
    """An HTTP/1.1 endpoint on loopback that keeps connections alive (h11) and counts them."""

    close_after_each: bool = False
    connections: int = 0
    received: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # method, path, body
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> KeptAliveEndpoint:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                self.received.append((request.method, request.target, body))
                closing = [(b"Connection", b"close")] if self.close_after_each else []
                answer = b"got %d bytes" % len(body)
                headers = [(b"Content-Length", str(len(answer)).encode()), *closing]
                writer.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
                if request.method != b"HEAD":
                    writer.write(conn.send(h11.Data(data=answer)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
            else:
                break
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[KeptAliveEndpoint]:
    server = await KeptAliveEndpoint().start()
    yield server
    await server.stop()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_requests_to_one_endpoint_share_one_connection_on_each_side(guard, endpoint):
    """A client's kept-alive connection to the guard carries PUTs (sized and chunked), a GET and
    a HEAD to one endpoint over one checked connection, each body framed to its end."""
    guard.trusted = frozenset({("127.0.0.1", endpoint.port)})
    base = f"http://127.0.0.1:{endpoint.port}"
    big = bytes(range(256)) * 4096  # 1 MiB, more than one read
    async with httpx.AsyncClient(proxy=guard.url) as client:
        put = await client.put(f"{base}/a", content=big)
        streamed = await client.put(f"{base}/b", content=chunks(b"x" * 10, b"y" * 70000))
        got = await client.get(f"{base}/a?part=1")
        head = await client.head(f"{base}/a")
    assert [r.status_code for r in (put, streamed, got, head)] == [200] * 4
    assert (put.text, streamed.text, got.text) == (
        "got 1048576 bytes",
        "got 70010 bytes",
        "got 0 bytes",
    )
    assert head.content == b""
    assert [(m, p) for m, p, _ in endpoint.received] == [
        (b"PUT", b"/a"),
        (b"PUT", b"/b"),
        (b"GET", b"/a?part=1"),
        (b"HEAD", b"/a"),
    ]
    assert endpoint.received[0][2] == big and endpoint.received[1][2] == b"x" * 10 + b"y" * 70000
    assert (endpoint.connections, guard.connected) == (1, 1)


async def send_on(reader, writer, request: bytes) -> bytes:
    """One request on an open connection to the guard, and its whole answer (Content-Length)."""
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


async def test_each_request_on_a_kept_alive_connection_is_checked_for_its_own_host(
    guard, endpoint, internal
):
    """Keep-alive is per endpoint: a second request on the same client connection, to a host the
    policy refuses, gets its 403 and reaches nothing."""
    guard.trusted = frozenset({("127.0.0.1", endpoint.port)})
    reader, writer = await asyncio.open_connection("127.0.0.1", guard.port)
    first = await send_on(
        reader,
        writer,
        f"GET http://127.0.0.1:{endpoint.port}/ok HTTP/1.1\r\nHost: s\r\n\r\n".encode(),
    )
    refused = await send_on(
        reader, writer, f"GET {internal.url}/secret HTTP/1.1\r\nHost: s\r\n\r\n".encode()
    )
    writer.close()
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"got 0 bytes")
    assert refused.startswith(b"HTTP/1.1 403 Forbidden by " + REFUSED_PREFIX.encode())
    assert internal.received == [] and guard.refused == 1


async def test_an_endpoint_that_closes_gets_a_new_checked_connection(guard, endpoint):
    endpoint.close_after_each = True
    guard.trusted = frozenset({("127.0.0.1", endpoint.port)})
    async with httpx.AsyncClient(proxy=guard.url) as client:
        answers = [await client.get(f"http://127.0.0.1:{endpoint.port}/{n}") for n in range(3)]
    assert [a.text for a in answers] == ["got 0 bytes"] * 3
    assert (endpoint.connections, guard.connected) == (3, 3)


@pytest.mark.parametrize(
    "head",
    [
        # both framings: the way a request is smuggled past a proxy (RFC 9112 6.3)
        b"Content-Length: 5\r\nTransfer-Encoding: chunked",
        b"Content-Length: 5\r\nContent-Length: 6",
    ],
)
async def test_ambiguous_framing_is_refused_and_forwards_nothing(guard, endpoint, head: bytes):
    guard.trusted = frozenset({("127.0.0.1", endpoint.port)})
    request = (
        f"POST http://127.0.0.1:{endpoint.port}/ HTTP/1.1\r\nHost: s\r\n".encode()
        + head
        + b"\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: s\r\n\r\n"
    )
    answer = await exchange(guard, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert endpoint.received == [] and endpoint.connections == 0
