"""API keys and webhook signing keys: generation and hashing (pure, no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

API_KEY_PREFIX = "KEY"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    # API keys are 256-bit random values: a plain SHA-256 cannot be brute-forced, and an index
    # on it lets us find the account without comparing against every row.
    return hashlib.sha256(api_key.encode()).hexdigest()


def api_key_matches(api_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(api_key), stored_hash)


@dataclass(frozen=True)
class SigningKeyPair:
    private_raw: bytes
    public_b64: str


def new_signing_key_pair() -> SigningKeyPair:
    private = Ed25519PrivateKey.generate()
    public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SigningKeyPair(
        private_raw=private.private_bytes_raw(),
        public_b64=base64.b64encode(public_raw).decode(),
    )
