"""Telnyx-compatible webhook signatures: Ed25519 over `f"{timestamp}|{body}"` (pure)."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TIMESTAMP_HEADER = "telnyx-timestamp"
SIGNATURE_HEADER = "telnyx-signature-ed25519"


def signature(key: Ed25519PrivateKey, timestamp: int, body: str) -> str:
    return base64.b64encode(key.sign(f"{timestamp}|{body}".encode())).decode()


def signed_headers(key: Ed25519PrivateKey, timestamp: int, body: str) -> dict[str, str]:
    """Every header of a delivery; the timestamp is unix seconds at send time (receivers
    reject it when more than 300 s off, so it is made per attempt, never stored)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "telnyx-webhooks",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(key, timestamp, body),
    }
