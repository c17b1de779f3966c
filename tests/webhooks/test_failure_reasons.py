"""Failed webhook requests are described in our own words, never with the library's text."""

from __future__ import annotations

import errno
import socket
import ssl

import httpx
import pytest

from callvault.webhooks.attempt import failure_reason, timeout_reason

SECRET_URL = "https://hooks.example.com/t/sk_live_abc123"


def raised_from(outer: Exception, cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            raised_from(
                httpx.ConnectError(f"{SECRET_URL}: [Errno 111]"),
                ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            ),
            "connection refused",
        ),
        (
            raised_from(httpx.ConnectError(SECRET_URL), socket.gaierror(-2, "Name not known")),
            "name does not resolve",
        ),
        (
            raised_from(httpx.ConnectError(SECRET_URL), ssl.SSLError(1, "CERTIFICATE_VERIFY")),
            "TLS handshake failed",
        ),
        (
            httpx.RemoteProtocolError(f"peer sent {SECRET_URL}"),
            "the receiver broke the HTTP protocol or closed the connection",
        ),
        (httpx.ReadError(SECRET_URL), "connection lost during the exchange"),
        (httpx.ConnectError(SECRET_URL), "could not connect"),
    ],
)
def test_reasons_are_classified(exc: Exception, reason: str) -> None:
    assert failure_reason(exc) == reason
    assert "sk_live" not in failure_reason(exc)


def test_timeouts_name_their_phase() -> None:
    assert timeout_reason(httpx.ConnectTimeout(SECRET_URL), 2) == "timed out after 2 s (connect)"
    assert timeout_reason(TimeoutError(), 1.5) == "timed out after 1.5 s"
