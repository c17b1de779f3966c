"""Failed webhook requests are described in our own words, never with the library's text."""

from __future__ import annotations

import errno
import socket
import ssl

import h11
import httpcore
import pytest

from callvault.outbound.post_client import (
    ConnectFailed,
    ExchangeBroken,
    Phase,
    PhaseTimeout,
    UnsupportedURL,
)
from callvault.webhooks.attempt import failure_reason

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
                ConnectFailed("could not connect"),
                ConnectionRefusedError(errno.ECONNREFUSED, f"{SECRET_URL}: refused"),
            ),
            "connection refused",
        ),
        (
            raised_from(
                ConnectFailed("name does not resolve"),
                raised_from(httpcore.ConnectError(SECRET_URL), socket.gaierror(-2, "Not known")),
            ),
            "name does not resolve",
        ),
        (
            raised_from(ConnectFailed("could not connect"), ssl.SSLError(1, "CERTIFICATE_VERIFY")),
            "TLS handshake failed",
        ),
        (
            raised_from(ExchangeBroken("x"), h11.RemoteProtocolError(f"peer sent {SECRET_URL}")),
            "the receiver broke the HTTP protocol or closed the connection",
        ),
        (
            raised_from(ExchangeBroken("x"), ConnectionResetError(errno.ECONNRESET, SECRET_URL)),
            "connection reset",
        ),
        (raised_from(ConnectFailed("could not connect"), OSError(SECRET_URL)), "could not connect"),
        (UnsupportedURL("unsupported URL scheme"), "unsupported URL scheme"),
        (ValueError(SECRET_URL), "request failed (ValueError)"),
    ],
)
def test_reasons_are_classified(exc: Exception, reason: str) -> None:
    assert failure_reason(exc) == reason
    assert "sk_live" not in failure_reason(exc)


def test_timeouts_name_their_phase() -> None:
    assert failure_reason(PhaseTimeout(Phase.CONNECT, 3)) == "timed out after 3 s (connect)"
    assert (
        failure_reason(raised_from(PhaseTimeout(Phase.ANSWER, 1.5), TimeoutError()))
        == "timed out after 1.5 s (waiting for the answer)"
    )
