"""The ObjectStore methods shared by every obstore-backed store (S3, S3-compatible, Azure).

Provider modules build the obstore store with their own configuration and keep their quirks
(signing, canonical URL) to themselves; put/head/get/delete and the error mapping live here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore

from callvault.storage import settings as storage_settings
from callvault.storage.base import (
    ObjectInfo,
    ObjectStore,
    StorageError,
    StorageErrorKind,
    check_metadata,
)
from callvault.storage.error_mapping import TRANSIENT, Cause, Codes, Phrases, cause_from_text

if TYPE_CHECKING:
    from obstore.store import AzureStore, ClientConfig, RetryConfig, S3Store

MAX_SIGNED_SECONDS = 7 * 24 * 3600  # SigV4's limit; Azure SAS is held to the same week

# 5 MiB parts (S3's minimum), 4 in flight: measured ~50 MB of peak RSS growth per upload
# whatever the file size (bench/upload_memory.py; 8 MiB parts measured ~75-83 MB for the same
# throughput on loopback). 10,000 parts of 5 MiB still allow 48 GiB objects.
DEFAULT_PART_SIZE = 5 * 1024 * 1024
DEFAULT_CONCURRENCY = 4
READ_CHUNK = 1024 * 1024

# attribute names obstore reports besides user metadata
_STANDARD_ATTRIBUTES = frozenset(
    {
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Type",
        "Cache-Control",
        "Storage-Class",
    }
)


def client_options(endpoint: str | None, timeout_secs: float | None) -> ClientConfig:
    """HTTP options: plain http only when the endpoint says so (emulators, private clouds)."""
    # a transfer that stops moving fails sooner than the whole request (storage/settings.py)
    stall = min(storage_settings.current().stall_secs, timeout_secs or math.inf)
    options: ClientConfig = {
        "allow_http": bool(endpoint and endpoint.startswith("http://")),
        "connect_timeout": timedelta(seconds=min(5.0, timeout_secs or 5.0)),
        # a whole request, body included: one part over a slow link must fit
        "timeout": timedelta(seconds=timeout_secs or 300.0),
        # a stalled one (a server that stops sending, reading or answering) fails sooner
        "read_timeout": timedelta(seconds=stall),
    }
    return options


def retry_config(timeout_secs: float | None) -> RetryConfig:
    """Few, short retries: the worker retries transient failures itself for 24 h, and the
    validate probe must answer within its timeout."""
    if timeout_secs is not None:
        return {"max_retries": 2, "retry_timeout": timedelta(seconds=timeout_secs)}
    return {"max_retries": 4, "retry_timeout": timedelta(seconds=60)}


class ObstoreObjectStore(ObjectStore):
    """put/head/get/delete over any obstore store; subclasses add signing and URLs."""

    # True when the store checks a checksum sent with every upload (S3: x-amz-checksum-sha256)
    checks_uploads = False
    # service error codes this provider explains its own way (error_mapping.explain)
    codes: Codes = {}
    phrases: Phrases = {}

    def __init__(
        self,
        store: S3Store | AzureStore | Any,
        *,
        backend: str,
        bucket: str,
        noun: str = "bucket",
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        secrets: Iterable[str] = (),
    ) -> None:
        self.backend = backend
        self.bucket = bucket
        self.noun = noun
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self._store = store
        self._secrets = tuple(s for s in secrets if s)

    async def put_file(
        self, key: str, source: Path | bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        attributes: dict[str, str] = {"Content-Type": content_type, **check_metadata(metadata)}
        body = source if isinstance(source, bytes) else Path(source)
        try:
            # a Path is read part by part: multipart above part_size, constant memory; bytes
            # are split the same way. The store's checksum_algorithm (s3.py) applies to both.
            await obstore.put_async(
                self._store,
                key,
                body,
                attributes=attributes,
                chunk_size=self.part_size,
                max_concurrency=self.max_concurrency,
            )
        except FileNotFoundError as exc:
            if isinstance(body, Path) and not await asyncio.to_thread(body.exists):
                raise  # our own source file is gone: a bug, not a storage failure
            raise self.error(exc, missing="no such bucket") from None
        except Exception as exc:
            raise self.error(exc, missing="no such bucket") from None

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            # a GET with head=True is a HEAD that also returns the attributes (metadata)
            result = await obstore.get_async(self._store, key, options={"head": True})
        except FileNotFoundError:
            # S3 and Azure answer a HEAD with an empty 404 for a missing object *and* a missing
            # bucket; both mean "not there", and the next put reports a missing bucket
            return None
        except Exception as exc:
            raise self.error(exc) from None
        attributes = {str(k): str(v) for k, v in result.attributes.items()}
        return ObjectInfo(
            size=int(result.meta["size"]),
            content_type=attributes.get("Content-Type"),
            metadata={k: v for k, v in attributes.items() if k not in _STANDARD_ATTRIBUTES},
        )

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        try:
            result = await obstore.get_async(self._store, key)
            async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)
        except Exception as exc:
            raise self.error(exc) from None

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, key)
        except FileNotFoundError as exc:
            # a missing object is fine (idempotent); a missing bucket is not
            cause = self.cause(exc)
            if "bucket" in cause.text or "container" in cause.text:
                raise self._build(cause) from None
        except Exception as exc:
            raise self.error(exc) from None

    async def presigned_get(self, signer: S3Store | AzureStore, key: str, expires_in: int) -> str:
        """A presigned GET (S3 SigV4, Azure SAS), made locally: no request to the store."""
        if not 1 <= expires_in <= MAX_SIGNED_SECONDS:
            raise ValueError(f"expires_in must be 1..{MAX_SIGNED_SECONDS} seconds")
        try:
            return await obstore.sign_async(signer, "GET", key, timedelta(seconds=expires_in))
        except Exception as exc:
            raise self.error(exc) from None

    def error(self, exc: BaseException, *, missing: str = "no such object") -> StorageError:
        """Map any exception raised by obstore to a StorageError."""
        if isinstance(exc, StorageError):
            return exc
        return self._build(self.cause(exc, missing=missing))

    def cause(self, exc: BaseException, *, missing: str = "no such object") -> Cause:
        found = cause_from_text(str(exc), codes=self.codes, phrases=self.phrases, missing=missing)
        return found if found is not None else _cause_from_type(exc, missing)

    def _build(self, cause: Cause) -> StorageError:
        return StorageError.build(
            cause.kind, self.backend, self.bucket, cause.text, secrets=self._secrets, noun=self.noun
        )


def _cause_from_type(exc: BaseException, missing: str) -> Cause:
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    if isinstance(exc, UnauthenticatedError):
        return Cause(StorageErrorKind.PERMANENT_AUTH, "unauthenticated — credentials rejected")
    if isinstance(exc, PermissionDeniedError):
        return Cause(StorageErrorKind.PERMANENT_AUTH, "permission denied")
    if isinstance(exc, FileNotFoundError):
        return Cause(StorageErrorKind.PERMANENT_NOT_FOUND, missing)
    # unknown: worth retrying; only the type name, the text may hold anything
    return Cause(TRANSIENT, f"unexpected {type(exc).__name__}")
