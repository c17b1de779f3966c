"""The recording encryption scheme (Twilio's), pure: no I/O beyond the file objects handed in.

- A fresh random 256-bit content key (CEK) and 96-bit IV per recording.
- The audio is encrypted with AES-256-GCM as a stream; the stored object is the ciphertext
  followed by the 16-byte GCM tag (no associated data).
- The CEK is wrapped with RSA-OAEP, SHA-256, MGF1-SHA-256 under the customer's public key.
- `encryption_details` = {"algorithm", "public_key_id", "fingerprint", "encrypted_cek", "iv"}
  (base64, standard alphabet with padding).

Public keys: PEM, RSA, 2048 to 4096 bits. The fingerprint is the hex sha256 of the DER
SubjectPublicKeyInfo (`openssl pkey -pubin -outform DER | sha256sum`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.ciphers.modes import GCM

ALGORITHM = "RSA-OAEP-SHA256+AES-256-GCM"
CEK_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
MIN_KEY_BITS = 2048
MAX_KEY_BITS = 4096
MAX_PEM_CHARS = 16 * 1024
CHUNK = 1024 * 1024
# what an encrypted object is served as (its bytes are not playable audio)
ENCRYPTED_CONTENT_TYPE = "application/octet-stream"
# the object-metadata names of the details (every store: one line of ASCII each)
METADATA_FIELDS = ("encrypted_cek", "iv", "public_key_id")


class KeyRefused(ValueError):
    """The text is not an acceptable public key; `str()` is the reason (never the key)."""


class DecryptionFailed(ValueError):
    """Wrong private key, tampered or truncated file, or unusable details; `str()` says which."""


def _oaep() -> OAEP:
    return OAEP(mgf=MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass(frozen=True)
class PublicKey:
    """An accepted public key: its canonical PEM (SubjectPublicKeyInfo), fingerprint, size."""

    pem: str
    fingerprint: str
    key_size: int


def fingerprint_of(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def parse_public_key(text: str) -> PublicKey:
    """The RSA public key in `text` (PEM), or KeyRefused with the reason.

    A private key is refused before any parsing, so it is never held longer than this call;
    only the re-serialized public key is ever kept, so nothing else the text held is stored.
    """
    if len(text) > MAX_PEM_CHARS:
        raise KeyRefused(f"the public key is longer than {MAX_PEM_CHARS} characters")
    if "PRIVATE KEY" in text:
        raise KeyRefused(
            "this is a private key: send only the public key (it was not stored); "
            "keep the private key secret, it is what decrypts the recordings"
        )
    if "BEGIN CERTIFICATE" in text:
        raise KeyRefused(
            "this is a certificate, not a public key: send its public key "
            "(openssl x509 -pubkey -noout -in cert.pem)"
        )
    if "-----BEGIN" not in text:
        raise KeyRefused("not a PEM public key (no -----BEGIN PUBLIC KEY----- block)")
    try:
        key = serialization.load_pem_public_key(text.strip().encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error):
        raise KeyRefused("not a valid PEM public key") from None
    except Exception:  # the parser's other errors (unsupported algorithms)
        raise KeyRefused("not a valid PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        kind = type(key).__name__.removesuffix("PublicKey").removeprefix("_") or "other"
        raise KeyRefused(f"an {kind} key: only RSA public keys are accepted")
    if not MIN_KEY_BITS <= key.key_size <= MAX_KEY_BITS:
        raise KeyRefused(
            f"an RSA key of {key.key_size} bits: {MIN_KEY_BITS} to {MAX_KEY_BITS} bits are accepted"
        )
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return PublicKey(pem=pem, fingerprint=fingerprint_of(key), key_size=key.key_size)


@dataclass(frozen=True)
class Recipient:
    """Whom a recording is encrypted for: the key row's id, fingerprint and public key."""

    key_id: str
    fingerprint: str
    public_key_pem: str

    def wrap(self, cek: bytes) -> bytes:
        key = serialization.load_pem_public_key(self.public_key_pem.encode("ascii"))
        assert isinstance(key, rsa.RSAPublicKey)
        return key.encrypt(cek, _oaep())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def details(recipient: Recipient, encrypted_cek: bytes, iv: bytes) -> dict[str, str]:
    """`encryption_details` as the webhook, the Recordings API and the row carry them."""
    return {
        "algorithm": ALGORITHM,
        "public_key_id": recipient.key_id,
        "fingerprint": recipient.fingerprint,
        "encrypted_cek": b64(encrypted_cek),
        "iv": b64(iv),
    }


def stored_content_type(audio_type: str, encryption_details: Mapping[str, Any] | None) -> str:
    return ENCRYPTED_CONTENT_TYPE if encryption_details else audio_type


def object_metadata(encryption_details: Mapping[str, Any] | None) -> dict[str, str]:
    """What the stored object carries so that it alone suffices to decrypt it."""
    if not encryption_details:
        return {}
    return {name: str(encryption_details[name]) for name in METADATA_FIELDS}


class ContentEncryptor:
    """AES-256-GCM over a stream with a fresh CEK and IV; `finish()` returns the tag."""

    def __init__(self) -> None:
        self.cek = os.urandom(CEK_BYTES)
        self.iv = os.urandom(IV_BYTES)
        self._context: CipherContext = Cipher(AES(self.cek), GCM(self.iv)).encryptor()

    def update(self, data: bytes) -> bytes:
        return self._context.update(data)

    def finish(self) -> bytes:
        """The last ciphertext bytes (none for GCM) followed by the 16-byte tag."""
        tail = self._context.finalize()
        tag: bytes = self._context.tag  # type: ignore[attr-defined]
        return tail + tag

    def details_for(self, recipient: Recipient) -> dict[str, str]:
        return details(recipient, recipient.wrap(self.cek), self.iv)


def _b64decode(value: Any, name: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionFailed(f"encryption details: {name} is not base64") from None


def find_details(document: Any) -> dict[str, Any]:
    """The details in what the customer has at hand: the details object itself, a webhook body,
    a Recordings API answer (anything holding `encryption_details`), or an object's metadata
    (`encrypted_cek`, `iv`, `public_key_id`)."""
    if isinstance(document, dict):
        if "encrypted_cek" in document and "iv" in document:
            return document
        for value in document.values():
            try:
                return find_details(value)
            except DecryptionFailed:
                continue
    if isinstance(document, list):
        for value in document:
            try:
                return find_details(value)
            except DecryptionFailed:
                continue
    raise DecryptionFailed("no encryption details (encrypted_cek and iv) found")


def unwrap_cek(private_key: Any, encryption_details: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(CEK, IV) from the details with the customer's private key, or DecryptionFailed."""
    algorithm = encryption_details.get("algorithm", ALGORITHM)
    if algorithm != ALGORITHM:
        raise DecryptionFailed(f"unknown algorithm {algorithm!r} (expected {ALGORITHM})")
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise DecryptionFailed("the private key is not an RSA private key")
    expected = encryption_details.get("fingerprint")
    actual = fingerprint_of(private_key.public_key())
    if expected and expected != actual:
        raise DecryptionFailed(
            f"wrong private key: the recording was encrypted for the key with fingerprint "
            f"{expected}, this private key's fingerprint is {actual}"
        )
    encrypted_cek = _b64decode(encryption_details.get("encrypted_cek", ""), "encrypted_cek")
    iv = _b64decode(encryption_details.get("iv", ""), "iv")
    if len(iv) != IV_BYTES:
        raise DecryptionFailed(f"encryption details: iv must be {IV_BYTES} bytes")
    try:
        cek = private_key.decrypt(encrypted_cek, _oaep())
    except ValueError:
        raise DecryptionFailed(
            "wrong private key: it cannot unwrap this recording's content key"
        ) from None
    if len(cek) != CEK_BYTES:
        raise DecryptionFailed("the unwrapped content key is not 256 bits")
    return cek, iv


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


def decrypt_stream(source: IO[bytes], size: int, target: Writable, cek: bytes, iv: bytes) -> None:
    """Decrypt `size` bytes of `source` (ciphertext + tag) into `target`, CHUNK at a time.

    Raises DecryptionFailed when the tag does not verify (tampered, truncated or another
    key's file); the caller must then discard what was written to `target`.
    """
    if size < TAG_BYTES:
        raise DecryptionFailed("the file is too short to be an encrypted recording")
    start = source.tell()
    source.seek(start + size - TAG_BYTES)
    tag = source.read(TAG_BYTES)
    source.seek(start)
    context = Cipher(AES(cek), GCM(iv, tag)).decryptor()
    remaining = size - TAG_BYTES
    while remaining:
        chunk = source.read(min(CHUNK, remaining))
        if not chunk:
            raise DecryptionFailed("the file ended early")
        remaining -= len(chunk)
        target.write(context.update(chunk))
    try:
        target.write(context.finalize())
    except InvalidTag:
        raise DecryptionFailed(
            "the authentication tag does not verify: the file was modified or truncated, "
            "or the details belong to another recording"
        ) from None
