"""Bodies of /v2/recording_encryption_keys (ours: Telnyx has no such resource)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from callvault.encryption_keys.models import RecordingEncryptionKey
from callvault.encryption_keys.scheme import ALGORITHM, MAX_PEM_CHARS
from callvault.moments import telnyx_time
from callvault.pagination import PaginationMeta


class CreateRecordingEncryptionKeyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", title="Create Recording Encryption Key Request")

    # the length limit is checked by the service, whose message never repeats the value
    public_key: str = Field(
        description=f"PEM of an RSA public key, 2048 to 4096 bits (at most {MAX_PEM_CHARS} "
        "characters). Never send the private key: it is refused and not stored.",
        examples=["-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA...\n"],
    )
    name: str = Field(min_length=1, max_length=255, description="A name to recognise the key.")


class RecordingEncryptionKeyData(BaseModel):
    model_config = ConfigDict(title="Recording Encryption Key")

    id: str
    record_type: Literal["recording_encryption_key"] = "recording_encryption_key"
    name: str
    fingerprint: str = Field(
        description="Hex sha256 of the key's DER SubjectPublicKeyInfo "
        "(openssl pkey -pubin -outform DER | sha256sum)."
    )
    key_size: int = Field(description="RSA modulus size in bits.")
    created_at: str = Field(examples=["2026-12-01T10:00:00.000Z"])

    @classmethod
    def of(cls, key: RecordingEncryptionKey) -> RecordingEncryptionKeyData:
        return cls(
            id=key.id,
            name=key.name,
            fingerprint=key.fingerprint,
            key_size=key.key_size,
            created_at=telnyx_time(key.created_at),
        )


class RecordingEncryptionKeyResponse(BaseModel):
    data: RecordingEncryptionKeyData


class RecordingEncryptionKeyList(BaseModel):
    data: list[RecordingEncryptionKeyData]
    meta: PaginationMeta


class EncryptionDetails(BaseModel):
    """How a recording was encrypted: what the private key's holder needs to decrypt it."""

    model_config = ConfigDict(title="Recording Encryption Details")

    algorithm: Literal["RSA-OAEP-SHA256+AES-256-GCM"] = ALGORITHM  # type: ignore[assignment]
    public_key_id: str = Field(description="The recording encryption key it was encrypted for.")
    fingerprint: str = Field(description="That key's fingerprint (hex sha256 of its DER SPKI).")
    encrypted_cek: str = Field(
        description="The AES-256 content key, wrapped RSA-OAEP SHA-256/MGF1-SHA-256 (base64)."
    )
    iv: str = Field(description="The 96-bit AES-GCM IV (base64). The 16-byte tag ends the file.")
    version: Literal["1", "2"] = Field(
        default="1",
        description="The format: 2 authenticates `callvault-recording-v2|{algorithm}|"
        "{public_key_id}|{recording_id}` as AES-GCM associated data (every recording encrypted "
        "since issue 21); 1, no associated data (docs/encryption.md).",
    )
    recording_id: str | None = Field(
        default=None, description="The recording the object is bound to (format 2; null for 1)."
    )
