"""The outbound address policy: pure address classification, URL shape, and resolution."""

from __future__ import annotations

import asyncio

import httpcore
import pytest

from callvault.outbound import transport
from callvault.outbound.addresses import is_public_address, refuse_reason, url_shape_error


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "100.64.0.1",  # carrier-grade NAT
        "100.100.100.200",  # a cloud metadata service lives there
        "192.0.2.1",  # documentation
        "240.0.0.1",  # reserved
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fe80::1%eth0",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "64:ff9b::c0a8:101",  # NAT64 of 192.168.1.1
        "fec0::1",  # deprecated site-local (issue 21)
        "feff:ffff::1",  # its last /10
        "3fff::1",  # IPv6 documentation, RFC 9637 (issue 21)
        "3fff:fff:ffff::1",  # the end of 3fff::/20
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",  # just outside 172.16/12
        "192.169.0.1",
        "100.128.0.1",  # just outside 100.64/10
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "3fff:1000::1",  # just outside 3fff::/20
    ],
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "http://example.com:8080/path?q=1",
        "HTTPS://EXAMPLE.COM/",
        "http://[2606:4700::1]:443/",
    ],
)
def test_well_formed_urls(url: str) -> None:
    assert url_shape_error(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com",
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://",
        "https:///path",
        "https://user:secret@example.com/",
        "https://example.com:99999/",
        "https://exa mple.com/",
        "https://example.com/\n",
        "https://" + "a" * 2050,
    ],
)
def test_malformed_urls(url: str) -> None:
    assert url_shape_error(url) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:9000/",  # a name that resolves to loopback
        "http://2130706433/",  # 127.0.0.1 as a number, resolved by the system
        "https://[::1]/",
        "https://10.0.0.5/",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_private_destinations_are_refused(url: str) -> None:
    assert await refuse_reason(url, allow_private=False) is not None
    assert await refuse_reason(url, allow_private=True) is None


async def test_public_and_not_yet_resolving_hosts_are_accepted() -> None:
    assert await refuse_reason("https://8.8.8.8/hook", allow_private=False) is None
    assert await refuse_reason("https://hooks.callvault-test.invalid/", allow_private=False) is None


async def test_only_http_and_https_even_when_private_networks_are_allowed() -> None:
    assert await refuse_reason("ftp://8.8.8.8/", allow_private=True) is not None
    assert await refuse_reason("gopher://localhost/", allow_private=True) is not None


async def test_name_resolution_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver that never answers fails the request after DNS_TIMEOUT_SECS."""

    async def never(*args: object, **kwargs: object) -> list[object]:
        await asyncio.sleep(3600)
        return []

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", never)
    monkeypatch.setattr(transport, "DNS_TIMEOUT_SECS", 0.2)
    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        await transport.checked_addresses("hooks.example.com", 443, allow_private=True)
