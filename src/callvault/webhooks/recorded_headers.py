"""What a delivery record keeps of the headers of an exchange (pure).

`GET /v2/webhook_deliveries` shows them to anyone who holds the account's API key. The
signature sent is replayable for 300 s over a deterministic body, so it is stored as
`[redacted]`; the receiver's answer may carry its own session cookies or credentials, which are
not ours to keep, so those headers are left out. Migration 0008_review applies the same rules
to rows recorded before.
"""

from __future__ import annotations

from collections.abc import Iterable

from callvault.webhooks.signing import SIGNATURE_HEADER

REDACTED = "[redacted]"
# request headers whose value is replaced (lowercase)
REDACTED_REQUEST_HEADERS = frozenset({SIGNATURE_HEADER})
# answer headers never stored (lowercase): credentials and session state of the receiver
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        "set-cookie",
        "set-cookie2",
        "cookie",
        "authorization",
        "proxy-authorization",
        "proxy-authentication-info",
        "authentication-info",
        "x-api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
    }
)


def recorded_request_headers(headers: Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    for name, value in headers:
        yield name, REDACTED if name.lower() in REDACTED_REQUEST_HEADERS else value


def recorded_response_headers(headers: Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    return (
        (name, value) for name, value in headers if name.lower() not in DROPPED_RESPONSE_HEADERS
    )
