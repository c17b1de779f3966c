"""The egress guard (outbound/egress.py): its pure parts, and a real proxy on loopback that
refuses non-public addresses for plain requests and CONNECT alike, and forwards what the
operator trusts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from callvault.outbound.egress import (
    REFUSED_PREFIX,
    BadRequest,
    EgressProxy,
    connect_target,
    origin_form,
    parse_head,
    trusted_endpoints,
    with_connection_close,
)
from tests.security.receiver import Receiver


def test_origin_form_drops_hop_by_hop_headers_and_closes():
    head = parse_head(
        b"PUT http://store.example:9000/b/k?x=1 HTTP/1.1\r\nHost: store.example:9000\r\n"
        b"Proxy-Authorization: Basic eA==\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n"
    )
    host, port, request = origin_form(head)
    assert (host, port) == ("store.example", 9000)
    assert request == (
        b"PUT /b/k?x=1 HTTP/1.1\r\nHost: store.example:9000\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    "target",
    ["https://store.example/k", "/relative", "http://user:pw@store.example/k", "http://:80/"],
)
def test_origin_form_refuses_what_it_cannot_check(target: str):
    with pytest.raises(BadRequest):
        origin_form(parse_head(f"GET {target} HTTP/1.1\r\n\r\n".encode()))


def test_connect_targets():
    assert connect_target(parse_head(b"CONNECT s.example:443 HTTP/1.1\r\n\r\n")) == (
        "s.example",
        443,
    )
    assert connect_target(parse_head(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n")) == ("::1", 8443)
    for bad in (b"CONNECT s.example HTTP/1.1\r\n\r\n", b"CONNECT s.example:0 HTTP/1.1\r\n\r\n"):
        with pytest.raises(BadRequest):
            connect_target(parse_head(bad))


def test_response_head_gets_connection_close():
    head = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"
    assert with_connection_close(head) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    )


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
    await writer.drain()
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
    assert b"\r\nConnection: close\r\n" in answer
    [received] = internal.received
    assert received.path == "/ok"
    assert received.headers["host"] == "store.example"
    assert "proxy-connection" not in received.headers
    # a neighbouring port of the same host is not trusted
    other = await exchange(
        guard, f"GET http://127.0.0.1:{internal.port + 1}/ HTTP/1.1\r\n\r\n".encode()
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
