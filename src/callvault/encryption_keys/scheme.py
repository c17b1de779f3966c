"""The recording encryption scheme (Twilio's), pure: no I/O beyond the file objects handed in.

- A fresh random 256-bit content key (CEK) and 96-bit IV per recording.
- The audio is encrypted with AES-256-GCM as a stream; the stored object is the ciphertext
  followed by the 16-byte GCM tag.
- The CEK is wrapped with RSA-OAEP, SHA-256, MGF1-SHA-256 under the customer's public key.
- `encryption_details` = {"algorithm", "public_key_id", "fingerprint", "encrypted_cek", "iv"}
  (base64, standard alphabet with padding), plus, from format version 2, "version" and
  "recording_id".

Format versions (docs/encryption.md): 1 had no associated data, so a genuine object of one
recording, moved with its metadata to another recording of the same key, decrypted without
complaint. 2 (everything encrypted since) authenticates
`callvault-recording-v2|{algorithm}|{public_key_id}|{recording_id}` as GCM associated data.
Both decrypt.

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
# the object-metadata names of the details (every store: one line of ASCII each); the
# object's metadata also carries `recording_id` (recordings/ingest.py)
METADATA_FIELDS = ("encrypted_cek", "iv", "public_key_id")
# the format version: "version" in the details, "encryption_version" in the object's metadata
# (beside its other metadata); absent = 1
FORMAT_V1 = "1"
FORMAT_V2 = "2"
VERSION_METADATA = "encryption_version"


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


def associated_data(public_key_id: str, recording_id: str) -> bytes:
    """Format 2's GCM associated data: what the object is (whose recording, for which key,
    how encrypted), authenticated by the tag."""
    for name, value in (("public_key_id", public_key_id), ("recording_id", recording_id)):
        if not value or "|" in value:
            raise DecryptionFailed(f"encryption details: {name} is empty or holds '|'")
    return f"callvault-recording-v{FORMAT_V2}|{ALGORITHM}|{public_key_id}|{recording_id}".encode()


def details(
    recipient: Recipient, encrypted_cek: bytes, iv: bytes, recording_id: str | None = None
) -> dict[str, str]:
    """`encryption_details` as the webhook, the Recordings API and the row carry them
    (format 2 when bound to a recording id, else the old format 1)."""
    found = {
        "algorithm": ALGORITHM,
        "public_key_id": recipient.key_id,
        "fingerprint": recipient.fingerprint,
        "encrypted_cek": b64(encrypted_cek),
        "iv": b64(iv),
    }
    if recording_id is not None:
        found |= {"version": FORMAT_V2, "recording_id": recording_id}
    return found


def stored_content_type(audio_type: str, encryption_details: Mapping[str, Any] | None) -> str:
    return ENCRYPTED_CONTENT_TYPE if encryption_details else audio_type


def object_metadata(encryption_details: Mapping[str, Any] | None) -> dict[str, str]:
    """What the stored object carries so that it alone suffices to decrypt it."""
    if not encryption_details:
        return {}
    found = {name: str(encryption_details[name]) for name in METADATA_FIELDS}
    version = str(encryption_details.get("version") or FORMAT_V1)
    if version != FORMAT_V1:
        found[VERSION_METADATA] = version
    return found


class ContentEncryptor:
    """AES-256-GCM over a stream with a fresh CEK and IV; `finish()` returns the tag.

    Bound (`recipient` and `recording_id` given): format 2, with the associated data.
    Unbound: format 1, no associated data (ingest's placeholder while it does not know the
    key yet, and old objects in tests).
    """

    def __init__(self, recipient: Recipient | None = None, recording_id: str | None = None) -> None:
        self.cek = os.urandom(CEK_BYTES)
        self.iv = os.urandom(IV_BYTES)
        self._context: CipherContext = Cipher(AES(self.cek), GCM(self.iv)).encryptor()
        self.bound_to: tuple[str, str] | None = None
        if recipient is not None and recording_id is not None:
            self._context.authenticate_additional_data(
                associated_data(recipient.key_id, recording_id)
            )
            self.bound_to = (recipient.key_id, recording_id)

    def update(self, data: bytes | bytearray) -> bytes:
        return self._context.update(data)

    def finish(self) -> bytes:
        """The last ciphertext bytes (none for GCM) followed by the 16-byte tag."""
        tail = self._context.finalize()
        tag: bytes = self._context.tag  # type: ignore[attr-defined]
        return tail + tag

    def details_for(self, recipient: Recipient) -> dict[str, str]:
        if self.bound_to is None:
            return details(recipient, recipient.wrap(self.cek), self.iv)
        key_id, recording_id = self.bound_to
        if key_id != recipient.key_id:
            raise ValueError("the content was bound to another key")
        return details(recipient, recipient.wrap(self.cek), self.iv, recording_id)


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


def format_version(encryption_details: Mapping[str, Any]) -> str:
    return str(
        encryption_details.get("version") or encryption_details.get(VERSION_METADATA) or FORMAT_V1
    )


def associated_data_of(
    encryption_details: Mapping[str, Any], expected_recording_id: str | None = None
) -> bytes | None:
    """The associated data to decrypt with (None: format 1, which has none), or
    DecryptionFailed. `expected_recording_id`: the recording the caller means to open (from
    its own records, not from the object): details of another recording are refused."""
    version = format_version(encryption_details)
    if version == FORMAT_V1:
        return None
    if version != FORMAT_V2:
        raise DecryptionFailed(
            f"encryption details: unknown format version {version!r} (this callvault reads "
            f"{FORMAT_V1} and {FORMAT_V2}; a newer callvault decrypts it)"
        )
    recording_id = str(encryption_details.get("recording_id") or "") or expected_recording_id
    if not recording_id:
        raise DecryptionFailed(
            "encryption details of format 2 name no recording_id: pass --recording-id"
        )
    if expected_recording_id is not None and recording_id != expected_recording_id:
        raise DecryptionFailed(
            f"these are the details of recording {recording_id}, not of "
            f"{expected_recording_id}: the object is another recording's"
        )
    key_id = str(encryption_details.get("public_key_id") or "")
    return associated_data(key_id, recording_id)


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


def decrypt_stream(
    source: IO[bytes],
    size: int,
    target: Writable,
    cek: bytes,
    iv: bytes,
    aad: bytes | None = None,
) -> None:
    """Decrypt `size` bytes of `source` (ciphertext + tag) into `target`, CHUNK at a time,
    with the associated data `aad` (format 2; None for format 1).

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
    if aad is not None:
        context.authenticate_additional_data(aad)
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
            "or it or its details belong to another recording"
        ) from None
