"""What a customer runs to decrypt: nothing but `cryptography`, the private key and the details
(the same lines as docs/encryption.md). Deliberately no callvault code."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def customer_decrypt(
    private_key: rsa.RSAPrivateKey, details: Mapping[str, str], stored: bytes
) -> bytes:
    """Raises ValueError (wrong key) or cryptography.exceptions.InvalidTag (tampered)."""
    cek = private_key.decrypt(
        base64.b64decode(details["encrypted_cek"]),
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        ),
    )
    # the 16-byte tag ends the file, where AESGCM expects it
    return AESGCM(cek).decrypt(base64.b64decode(details["iv"]), stored, None)
