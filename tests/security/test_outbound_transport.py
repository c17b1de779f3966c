"""Connect-time address checks for requests to customer URLs (outbound/transport.py), through
the webhook client (outbound/post_client.py).

Real sockets: a receiver on loopback records every request that reaches it, so "refused" means
nothing arrived, not merely that an exception was raised. Name resolution is injected (a resolver
function), never patched into the socket layer.
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callvault.config import load_settings
from callvault.outbound.post_client import ConnectFailed, PostClient, UnsupportedURL
from callvault.outbound.transport import PolicyRefusal
from callvault.webhooks.attempt import failure_reason
from tests.outbound.posting import post
from tests.security.receiver import Receiver, Reply


class ScriptedResolver:
    """Answers each lookup with the next scripted list (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def no_lookups(host: str, port: int) -> list[str]:
    raise AssertionError(f"a literal address must not be resolved ({host})")


@contextlib.asynccontextmanager
async def guarded(**options: Any) -> AsyncIterator[PostClient]:
    client = PostClient(**options)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


async def test_a_name_that_rebinds_to_loopback_is_refused_at_connect_time(receiver):
    # DNS rebinding: the name answered a public address when the URL was configured (first
    # lookup), and 127.0.0.1 when the webhook is sent (second lookup)
    resolver = ScriptedResolver(["93.184.216.34"], ["127.0.0.1"])
    assert await resolver("hooks.example.com", receiver.port) == ["93.184.216.34"]
    async with guarded(allow_private=False, resolver=resolver) as client:
        with pytest.raises(PolicyRefusal, match=r"hooks\.example\.com.*127\.0\.0\.1"):
            await post(client, f"http://hooks.example.com:{receiver.port}/hook")
    assert len(resolver.lookups) == 2  # the connection resolved the name itself
    assert receiver.received == []


async def test_the_same_rebinding_name_reaches_the_receiver_when_private_networks_are_allowed(
    receiver,
):
    resolver = ScriptedResolver(["93.184.216.34"], ["127.0.0.1"])
    await resolver("hooks.example.com", receiver.port)
    async with guarded(allow_private=True, resolver=resolver) as client:
        response = await post(client, f"http://hooks.example.com:{receiver.port}/hook")
    assert response.status == 200
    assert [r.path for r in receiver.received] == ["/hook"]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.8.9.10",
        "[::1]",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata service
        "[fe80::1]",
        "[fc00::1]",
        "0.0.0.0",
        "[::]",
        "224.0.0.1",
        "100.100.100.200",  # carrier-grade NAT space, used for metadata by some clouds
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
        "[::ffff:a9fe:a9fe]",  # IPv4-mapped 169.254.169.254 in hex
    ],
)
async def test_literal_non_public_addresses_are_refused_without_connecting(host, receiver):
    async with guarded(allow_private=False, resolver=no_lookups) as client:
        with pytest.raises(PolicyRefusal, match="not a public address"):
            await post(client, f"http://{host}:{receiver.port}/")
    assert receiver.received == []


async def test_a_name_with_one_private_answer_among_public_ones_is_refused(receiver):
    resolver = ScriptedResolver(["93.184.216.34", "127.0.0.1"])
    async with guarded(allow_private=False, resolver=resolver) as client:
        with pytest.raises(PolicyRefusal):
            await post(client, f"http://mixed.example.com:{receiver.port}/")
    assert receiver.received == []


async def test_private_networks_allowed_by_the_environment_setting(tmp_path, receiver):
    allowed = load_settings(
        {"CALLVAULT_DATA_DIR": str(tmp_path), "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true"}
    )
    refused = load_settings(
        {"CALLVAULT_DATA_DIR": str(tmp_path), "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "false"}
    )
    async with guarded(allow_private=allowed.allow_private_networks) as client:
        assert (await post(client, f"{receiver.url}/ok")).status == 200
    async with guarded(allow_private=refused.allow_private_networks) as client:
        with pytest.raises(PolicyRefusal):
            await post(client, f"{receiver.url}/refused")
    assert [r.path for r in receiver.received] == ["/ok"]


async def test_a_redirect_from_the_receiver_is_not_followed(receiver):
    receiver.replies["/hook"] = Reply(302, {"Location": f"{receiver.url}/elsewhere"})
    async with guarded(allow_private=True) as client:
        response = await post(client, f"{receiver.url}/hook")
    assert response.status == 302
    assert [r.path for r in receiver.received] == ["/hook"]


async def test_the_checked_address_is_used_but_the_host_header_keeps_the_name(receiver):
    resolver = ScriptedResolver(["127.0.0.1"])
    async with guarded(allow_private=True, resolver=resolver) as client:
        await post(client, f"http://receiver.test:{receiver.port}/h")
    assert receiver.received[0].headers["host"] == f"receiver.test:{receiver.port}"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd"])
async def test_only_http_and_https(url):
    async with guarded(allow_private=True) as client:
        with pytest.raises(UnsupportedURL):
            await post(client, url)


async def test_proxies_from_the_environment_are_ignored(monkeypatch, receiver):
    # a proxy would resolve the name after our check; callvault always connects directly
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    async with guarded(allow_private=True) as client:
        assert (await post(client, f"{receiver.url}/direct")).status == 200
    assert [r.path for r in receiver.received] == ["/direct"]


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_to_the_checked_address_keeps_sni_and_certificate_name(tmp_path):
    cert, key = _self_signed(tmp_path, "hooks.customer.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    receiver = await Receiver(ssl_context=server_ctx).start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        resolver = ScriptedResolver(["127.0.0.1"])
        async with guarded(allow_private=True, resolver=resolver, ssl_context=trust) as client:
            response = await post(client, f"https://hooks.customer.test:{receiver.port}/tls")
            assert response.status == 200
            # the certificate is checked against the name, not the address we connected to
            with pytest.raises(ConnectFailed) as refused:
                await post(client, f"https://127.0.0.1:{receiver.port}/by-address")
            assert failure_reason(refused.value) == "TLS handshake failed"
        assert receiver.received[0].sni == "hooks.customer.test"
        assert resolver.lookups == [("hooks.customer.test", receiver.port)]
    finally:
        await receiver.stop()
