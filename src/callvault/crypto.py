"""AES-256-GCM envelope for secrets at rest, with key ids so keys can be rotated.

A sealed value is `{key_id}:{base64(nonce || ciphertext+tag)}`. The caller's associated data (the
connection id for storage credentials, the account id for signing keys) binds a ciphertext to its
row, so a value copied onto another row does not decrypt.

Plumbing, not a domain: the settings (config.py) build the KeyRing, and credentials, accounts
and the download links all use it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class KeyError_(Exception):
    """A key is malformed, or a sealed value names a key that is not configured."""


def key_id_for(key: bytes) -> str:
    return hashlib.sha256(b"callvault key id" + key).hexdigest()[:12]


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[bytes, ...]  # the first one is active

    @classmethod
    def from_b64(cls, encoded: list[str]) -> KeyRing:
        keys = []
        for item in encoded:
            try:
                key = base64.b64decode(item, validate=True)
            except ValueError as exc:
                raise KeyError_(
                    "CALLVAULT_ENCRYPTION_KEYS holds a value that is not base64"
                ) from exc
            if len(key) != 32:
                raise KeyError_("every CALLVAULT_ENCRYPTION_KEYS entry must decode to 32 bytes")
            keys.append(key)
        if not keys:
            raise KeyError_("no encryption key configured")
        return cls(tuple(keys))

    @property
    def active_key_id(self) -> str:
        return key_id_for(self.keys[0])

    def _key(self, key_id: str) -> bytes:
        for key in self.keys:
            if key_id_for(key) == key_id:
                return key
        raise KeyError_(f"no configured encryption key has id {key_id}")

    def seal(self, plaintext: bytes, associated_data: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[0]).encrypt(nonce, plaintext, associated_data.encode())
        return f"{self.active_key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, associated_data: str) -> bytes:
        key_id, _, blob = sealed.partition(":")
        raw = base64.b64decode(blob)
        return AESGCM(self._key(key_id)).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data.encode()
        )

    def needs_rotation(self, sealed: str) -> bool:
        return sealed.partition(":")[0] != self.active_key_id

    def derive(self, purpose: bytes) -> bytes:
        """A sub-key of the active key for one purpose (link signing), never the key itself."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
            self.keys[0]
        )
