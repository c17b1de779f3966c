"""Signatures verify with the official Telnyx SDK (pure: no network)."""

from __future__ import annotations

import base64
import time

import pytest
import telnyx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from callvault.webhooks.signing import signed_headers


def public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def test_sdk_unwrap_accepts_our_signature() -> None:
    key = Ed25519PrivateKey.generate()
    body = '{"data":{"event_type":"call.recording.saved","id":"x"},"meta":{"attempt":1}}'
    headers = signed_headers(key, int(time.time()), body)
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "telnyx-webhooks"
    client = telnyx.Telnyx(api_key="KEY-unused", public_key=public_b64(key))
    event = client.webhooks.unwrap(body, headers=headers, key=public_b64(key))
    assert event.to_dict()["data"]["id"] == "x"


def test_sdk_rejects_a_tampered_body_and_another_key() -> None:
    key = Ed25519PrivateKey.generate()
    body = '{"a":1}'
    headers = signed_headers(key, int(time.time()), body)
    client = telnyx.Telnyx(api_key="KEY-unused")
    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap('{"a":2}', headers=headers, key=public_b64(key))
    other = Ed25519PrivateKey.generate()
    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap(body, headers=headers, key=public_b64(other))


def test_sdk_rejects_an_old_timestamp() -> None:
    key = Ed25519PrivateKey.generate()
    headers = signed_headers(key, int(time.time()) - 301, "{}")
    client = telnyx.Telnyx(api_key="KEY-unused")
    with pytest.raises(ValueError, match="too old"):
        client.webhooks.unwrap("{}", headers=headers, key=public_b64(key))
