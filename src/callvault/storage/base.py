"""The one interface every object store implements, and the one error it raises.

Callers (ingest, the worker, the validate endpoint) never see a provider's exception: each
provider module maps its failures to `StorageError` with one of three kinds, which is what the
worker's retry policy needs (retry transient ones, fall back on permanent ones), and a short
human reason that can go into a `call.recording.error` webhook as is.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable


class StorageErrorKind(StrEnum):
    PERMANENT_AUTH = "permanent-auth"
    PERMANENT_NOT_FOUND = "permanent-not-found"
    TRANSIENT = "transient"

    @property
    def permanent(self) -> bool:
        return self is not StorageErrorKind.TRANSIENT


class StorageError(Exception):
    """A store operation failed. `str(err)` is the reason, e.g.
    "s3-generic bucket bars: SignatureDoesNotMatch — the secret key is wrong".

    Build it with `StorageError.build`, which names backend and bucket and removes any secret
    that might have slipped into the cause: reasons reach webhooks, logs and API responses.
    """

    def __init__(self, kind: StorageErrorKind, backend: str, bucket: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.backend = backend
        self.bucket = bucket
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"StorageError({self.kind.value!r}, {self.reason!r})"

    @classmethod
    def build(
        cls,
        kind: StorageErrorKind,
        backend: str,
        bucket: str,
        cause: str,
        *,
        secrets: Iterable[str] = (),
        noun: str = "bucket",
    ) -> StorageError:
        subject = where(backend, bucket, noun)
        return cls(kind, backend, bucket, redact(f"{subject}: {cause}", secrets))


def where(backend: str, bucket: str, noun: str = "bucket") -> str:
    """'s3 bucket x' / 'azure container x' / 'local store x': the reason's subject (each
    provider module says what its buckets are called)."""
    return f"{backend} {noun} {bucket}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (and its first line, for multi-line keys) with '***'."""
    for secret in secrets:
        if not secret:
            continue
        variants = {secret, secret.strip(), *secret.strip().splitlines()[:1]}
        for variant in sorted(variants, key=len, reverse=True):
            # short fragments would mangle ordinary words; a secret is never this short
            if len(variant) >= 8:
                text = text.replace(variant, "***")
    return text


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None
    metadata: dict[str, str] = field(default_factory=dict)


# Metadata keys every backend accepts unchanged: S3 lowercases x-amz-meta-* names and Azure
# requires C# identifiers (no hyphens), so only lowercase letters, digits and underscores.
_METADATA_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata as a plain dict, or ValueError when a key or value would not round-trip."""
    for key, value in metadata.items():
        if not _METADATA_KEY.match(key):
            raise ValueError(f"metadata key {key!r} must match {_METADATA_KEY.pattern}")
        if not value.isascii() or any(ch in value for ch in "\r\n"):
            raise ValueError(f"metadata value of {key!r} must be one line of ASCII")
    return dict(metadata)


@runtime_checkable
class ObjectStore(Protocol):
    """A bucket (or container, or directory) that holds recordings.

    Every method raises `StorageError` on failure and nothing else (a `ValueError` only for a
    caller's mistake, such as an invalid key or metadata key).
    """

    backend: str  # a provider's name (storage/registry.py) or "local"
    bucket: str
    # True when `put_file` sends a checksum of the body with the upload and returns only when it
    # matched what the store received: the store refuses a mismatch (S3, Azure, GCS), or
    # put_file compares the checksum the store answers and removes what it kept (GCS against a
    # store that ignores the sent one). A body corrupted on the way is a transient StorageError,
    # never a stored object under the key. The worker skips its HEAD after such a put (issue 14).
    checks_uploads: bool

    async def put_file(
        self, key: str, source: Path | bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        """Upload a file, streamed from disk (multipart for large files, constant memory), or
        bytes already in memory (a small recording: no temp file); checked the same way."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Size, content type and metadata; None when the object does not exist."""
        ...

    def get_stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; a missing object raises permanent-not-found."""
        ...

    async def delete(self, key: str) -> None:
        """Delete the object; a missing object is fine (idempotent)."""
        ...

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        """A URL anyone can GET for `expires_in` seconds."""
        ...

    def canonical_url(self, key: str) -> str:
        """Where the object lives (`s3://…`, `gs://…`, `https://…`), for recording_urls."""
        ...

    # The two members below have defaults for a remote store (a provider class subclasses
    # ObjectStore to inherit them); the local directory store overrides both.

    def local_path(self, key: str) -> Path | None:
        """The file on this machine that holds `key` (it may not exist), when the store is a
        local directory: callers read or serve it directly. None for a remote store.
        ValueError for an unsafe key."""
        return None

    async def move_file(
        self, key: str, path: Path, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        """`put_file` of a file the caller no longer needs: a local directory store takes it
        by a rename (it is gone afterwards); a remote store uploads it and leaves it."""
        await self.put_file(key, path, content_type=content_type, metadata=metadata)
