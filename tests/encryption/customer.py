"""What a customer runs to decrypt: nothing but `cryptography`, the private key and the details
(the same lines as docs/encryption.md). Deliberately no callvault code."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ALGORITHM = "RSA-OAEP-SHA256+AES-256-GCM"


def associated_data(details: Mapping[str, str], recording_id: str | None = None) -> bytes | None:
    """Format 2 (`version` in the details, `encryption_version` in the object's metadata):
    the recording the customer means to open, its key and the algorithm; format 1: none."""
    version = details.get("version") or details.get("encryption_version") or "1"
    if version == "1":
        return None
    recording = recording_id or details["recording_id"]
    return f"callvault-recording-v2|{ALGORITHM}|{details['public_key_id']}|{recording}".encode()


def customer_decrypt(
    private_key: rsa.RSAPrivateKey,
    details: Mapping[str, str],
    stored: bytes,
    recording_id: str | None = None,
) -> bytes:
    """Raises ValueError (wrong key) or cryptography.exceptions.InvalidTag (tampered, or
    another recording's object)."""
    cek = private_key.decrypt(
        base64.b64decode(details["encrypted_cek"]),
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        ),
    )
    # the 16-byte tag ends the file, where AESGCM expects it
    aad = associated_data(details, recording_id)
    return AESGCM(cek).decrypt(base64.b64decode(details["iv"]), stored, aad)
