"""Google Cloud Storage buckets, through the official google-cloud-storage client: everything
about them — configuration model, naming rules, secrets, error mapping, URLs, how a store opens.
The registry (storage/registry.py) composes `GCS`.

Service-account impersonation and workload identity are not offered: no server here can check
them (docs/storage.md).

Why not obstore: its GCS path writes through the XML API, which no emulator implements, so it
could not be tested here (see reference/test-backends.md).

Quirks kept here:
- Credentials are the service-account key JSON, loaded with `always_use_jwt_access=True`: the
  client signs its own access tokens and never calls the key's token_uri, which is the same code
  path in production and against the emulator (and never hangs offline on a token fetch).
- STORAGE_EMULATOR_HOST overrides the API endpoint; the credentials are used even then.
- The client is synchronous: every call runs in the storage thread pool (`blocking.py`), bounded
  by a per-request timeout and a retry deadline so that a hung endpoint frees the thread.
- Uploads stream from the file (or send bytes the worker holds): up to 8 MiB in one request,
  above that a resumable upload in `part_size` chunks, so memory stays bounded by one chunk.
- Upload integrity (issue 14, `checks_uploads`): put_file computes the CRC32C of the file (one
  more read of the local file: measured 0.28 ms of CPU per MB, page cache warm) or of the bytes
  and sends it with the upload, so GCS itself refuses a body that does not match (HTTP 400).
  The answer to every upload carries the CRC32C GCS computed of what it kept: put_file compares
  it with its own too (for a resumable upload the client library does, raising DataCorruption),
  which also catches a store that ignores the sent value (fake-gcs-server does). A mismatch
  deletes that generation of the object (if_generation_match: never a newer one) and is a
  transient error: the worker retries, and announces a recording only after put_file returned.
  Cost per recording: that local read and, only after a corruption, one DELETE; no extra
  request otherwise, no download.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import google_crc32c
import structlog
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account
from pydantic import Field, field_validator

from callvault.outbound.egress import REFUSED_PREFIX
from callvault.storage.base import ObjectInfo, ObjectStore, StorageError, check_metadata
from callvault.storage.blocking import run_blocking
from callvault.storage.checked_endpoint import egress_proxy_for
from callvault.storage.configuration import (
    MASK_NOTE,
    MASKED_ANSWER,
    AnswerModel,
    ConfigurationModel,
    Provider,
    Secret,
    checked_bucket,
    invalid,
    looks_masked,
)
from callvault.storage.configuration import Text as _Text
from callvault.storage.error_mapping import (
    AUTH,
    CORRUPTED_UPLOAD,
    EGRESS_REFUSED,
    NOT_FOUND,
    TRANSIENT,
    Cause,
    cause_for_status,
)

log = structlog.get_logger("callvault.storage")

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
DEFAULT_PART_SIZE = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads require
READ_CHUNK = 1024 * 1024
MAX_SIGNED_SECONDS = 7 * 24 * 3600  # V4 signing's limit
_RESUMABLE_UNIT = 256 * 1024
# GCS's answer to a body that does not match the sent checksum, e.g. 'Provided CRC32C "…"
# doesn't match calculated CRC32C "…".'
_REFUSED_CHECKSUM = re.compile(r"(CRC32C|MD5).*(doesn't|does not) match", re.IGNORECASE)


# ---- rules (pure)

_BUCKET_CHARS = re.compile(r"^[a-z0-9._-]+$")


def bucket_name_error(name: str) -> str | None:
    """None when `name` is a valid bucket name (Google Cloud "Bucket naming requirements"),
    else why not."""
    # up to 222 characters only when dotted, each dot-separated part at most 63
    if not 3 <= len(name) <= (222 if "." in name else 63):
        return "bucket name must be 3 to 63 characters long (up to 222 with dots)"
    if not _BUCKET_CHARS.match(name):
        return (
            "bucket name may contain only lowercase letters, digits, hyphens, underscores and dots"
        )
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "bucket name must begin and end with a letter or digit"
    if any(not 1 <= len(part) <= 63 for part in name.split(".")):
        return "each dot-separated part of a bucket name must be 1 to 63 characters long"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "bucket name must not be formatted as an IP address"
    if name.startswith("goog") or "google" in name:
        return "bucket name must not begin with 'goog' or contain 'google'"
    return None


GOOGLE_UNIVERSE = "googleapis.com"


def service_account_error(value: str | Mapping[str, Any]) -> str | None:
    """Why `value` is not a GCS service-account key JSON, or None. Never repeats the key."""
    if isinstance(value, Mapping):
        info: Any = dict(value)
    else:
        try:
            info = json.loads(value)
        except (TypeError, ValueError, RecursionError):
            return "credentials must be the service-account key JSON (it is not valid JSON)"
    if not isinstance(info, dict):
        return "credentials must be a JSON object (a service-account key)"
    if info.get("type") != "service_account":
        return 'credentials must be a service-account key ("type": "service_account")'
    for name in ("client_email", "private_key"):
        field = info.get(name)
        if not isinstance(field, str) or not field.strip():
            return f"credentials must contain a non-empty string {name!r}"
    # another universe (a sovereign cloud) has other endpoints than the ones callvault talks to:
    # the client refuses it at the first request, so refuse it here
    universe = info.get("universe_domain", GOOGLE_UNIVERSE)
    if universe != GOOGLE_UNIVERSE:
        return f'credentials must be for the {GOOGLE_UNIVERSE} universe ("universe_domain")'
    return None


def canonical_url(bucket: str, key: str) -> str:
    """`gs://bucket/key`, the key as is (as the seed shows)."""
    return f"gs://{bucket}/{key}"


def load_credentials(
    raw: str | Mapping[str, Any],
) -> tuple[service_account.Credentials, str | None]:
    """(credentials, project id) from a service-account key; ValueError says what is wrong
    without repeating any of the key's content."""
    reason = service_account_error(raw)
    if reason is not None:
        raise ValueError(reason)
    info: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else json.loads(raw)
    if not info.get("token_uri"):
        raise ValueError("credentials must contain a non-empty string 'token_uri'")
    try:
        credentials = service_account.Credentials.from_service_account_info(
            info, scopes=SCOPES, always_use_jwt_access=True
        )
    except Exception:
        raise ValueError("the credentials' private key cannot be read") from None
    project = info.get("project_id")
    return credentials, str(project) if project else None


# ---- configuration models (Telnyx's shape)


class GcsConfiguration(ConfigurationModel):
    """Google Cloud Storage."""

    backend: Literal["gcs"] = "gcs"
    bucket: _Text = Field(
        description="Name of the bucket to be used to store recording files (GCS naming rules).",
        json_schema_extra={"pattern": r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"},
    )
    credentials: Secret = Field(
        description=(
            "The service-account key JSON as a string (type service_account, with "
            "client_email and private_key), " + MASK_NOTE + ". Write-only: answered masked "
            "(all but the last 4 characters replaced by '*')."
        ),
        json_schema_extra={"contentMediaType": "application/json"},
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return checked_bucket(bucket_name_error, value)

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: str) -> str:
        if looks_masked(value):
            return value
        reason = service_account_error(value)
        if reason is not None:
            raise invalid("gcs_credentials", reason)
        return value


class GcsConfigurationData(AnswerModel):
    backend: Literal["gcs"] = "gcs"
    bucket: str
    credentials: str = Field(description=MASKED_ANSWER)


SECRET_FIELDS = ("credentials",)


def crc32c_of(source: Path | bytes) -> str:
    """The CRC32C of the bytes, or of the file read in chunks, as GCS writes it (base64 of the
    big-endian 4 bytes)."""
    checksum = google_crc32c.Checksum()
    if isinstance(source, bytes):
        checksum.update(source)
    else:
        with open(source, "rb") as file:
            while chunk := file.read(READ_CHUNK):
                checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()


class Corrupted(Exception):
    """What GCS kept is not the file: its CRC32C differs from the file's."""


CORRUPTED = Cause(TRANSIENT, f"CRC32C mismatch — {CORRUPTED_UPLOAD}")


class GcsObjectStore(ObjectStore):
    backend = "gcs"
    # the CRC32C sent with every upload (GCS refuses a mismatch) and compared with the one GCS
    # answers: put_file never returns with a corrupted object under the key
    checks_uploads = True

    def __init__(
        self,
        bucket: str,
        credentials_json: str | Mapping[str, Any],
        *,
        timeout_secs: float | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        egress_proxy: str | None = None,
    ) -> None:
        self.bucket = bucket
        self._secrets = _secrets_of(credentials_json)
        if part_size % _RESUMABLE_UNIT:
            raise ValueError("part_size must be a multiple of 256 KiB")
        self.part_size = part_size
        try:
            self._credentials, project = load_credentials(credentials_json)
        except ValueError as exc:
            raise StorageError.build(
                AUTH, "gcs", bucket, f"Invalid credentials json — {exc}", secrets=self._secrets
            ) from None
        emulator = os.environ.get(EMULATOR_ENV)
        self._client = storage.Client(
            project=project,
            credentials=self._credentials,
            client_options={"api_endpoint": emulator} if emulator else None,
            _http=http_session(self._credentials, egress_proxy),
        )
        self._bucket = self._client.bucket(bucket)
        # (connect, read) per HTTP request, and a deadline for the client's own retries
        self._timeout = (min(5.0, timeout_secs or 5.0), timeout_secs or 120.0)
        self._retry = DEFAULT_RETRY.with_timeout(timeout_secs or 60.0)

    async def put_file(
        self, key: str, source: Path | bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        checked = check_metadata(metadata)

        def upload() -> None:
            expected = crc32c_of(source)
            blob = self._bucket.blob(key, chunk_size=self.part_size)
            blob.metadata = checked
            options: dict[str, Any] = {
                "content_type": content_type,
                "timeout": self._timeout,
                "retry": self._retry,
                "checksum": "crc32c",
                # a resumable upload sends it at the start: GCS checks it at the end
                "crc32c_checksum_value": expected,
            }
            try:
                # both go through upload_from_file: one request up to 8 MiB, resumable above
                if isinstance(source, bytes):
                    blob.upload_from_string(source, **options)
                else:
                    blob.upload_from_filename(str(source), **options)
            except DataCorruption as exc:
                # a resumable upload the library found corrupted: GCS already kept it
                self._discard(key, _generation_of(exc))
                raise Corrupted from None
            if blob.crc32c != expected:
                self._discard(key, blob.generation)
                raise Corrupted

        if not isinstance(source, bytes) and not await asyncio.to_thread(Path(source).is_file):
            raise FileNotFoundError(source)
        await self._call(upload, operation="put")

    def _discard(self, key: str, generation: int | None) -> None:
        """Delete the corrupted generation, and only it (a newer upload stays). Best effort:
        a failure leaves it to be overwritten by the retry, and the recording is announced
        only after an upload that put_file verified."""
        if generation is None:
            return
        try:
            self._bucket.blob(key).delete(
                if_generation_match=generation, timeout=self._timeout, retry=self._retry
            )
        except Exception as exc:
            # the upload's own error is what the caller needs; this is only worth a line
            cause = gcs_cause(exc, operation="delete")
            log.warning(
                "corrupted upload not deleted", bucket=self.bucket, key=key, detail=cause.text
            )

    async def head(self, key: str) -> ObjectInfo | None:
        def get() -> ObjectInfo | None:
            blob = self._bucket.get_blob(key, timeout=self._timeout, retry=self._retry)
            if blob is None:
                return None
            return ObjectInfo(
                size=int(blob.size or 0),
                content_type=blob.content_type,
                metadata=dict(blob.metadata or {}),
            )

        return await self._call(get, operation="head")

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        blob = self._bucket.blob(key)
        reader = await self._call(
            lambda: blob.open(
                "rb", chunk_size=self.part_size, timeout=self._timeout, retry=self._retry
            ),
            operation="get",
        )
        try:
            while chunk := await self._call(lambda: reader.read(READ_CHUNK), operation="get"):
                yield bytes(chunk)
        finally:
            reader.close()

    async def delete(self, key: str) -> None:
        def remove() -> None:
            try:
                self._bucket.blob(key).delete(timeout=self._timeout, retry=self._retry)
            except api_exceptions.NotFound as exc:
                # a missing object is fine (idempotent); a missing bucket is not
                if "bucket does not exist" in str(exc.message):
                    raise

        await self._call(remove, operation="delete")

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        if not 1 <= expires_in <= MAX_SIGNED_SECONDS:
            raise ValueError(f"expires_in must be 1..{MAX_SIGNED_SECONDS} seconds")
        blob = self._bucket.blob(key)
        # signed locally with the key's private key; the URL's host is the API endpoint
        # (storage.googleapis.com, or the emulator)
        url = await self._call(
            lambda: blob.generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=expires_in),
                method="GET",
                credentials=self._credentials,
            ),
            operation="sign",
        )
        return str(url)

    def canonical_url(self, key: str) -> str:
        return canonical_url(self.bucket, key)

    async def _call(self, fn: Any, *, operation: str) -> Any:
        try:
            return await run_blocking(fn)
        except Exception as exc:
            cause = gcs_cause(exc, operation=operation)
            raise StorageError.build(
                cause.kind, "gcs", self.bucket, cause.text, secrets=self._secrets
            ) from None


def _generation_of(exc: DataCorruption) -> int | None:
    """The generation GCS gave the corrupted object, from the answer the library checked."""
    try:
        return int(exc.response.json()["generation"])
    except Exception:
        return None  # no answer, no JSON, no generation: nothing to delete


def _secrets_of(credentials: str | Mapping[str, Any]) -> list[str]:
    if isinstance(credentials, Mapping):
        return [str(credentials.get("private_key") or ""), json.dumps(dict(credentials))]
    secrets = [credentials]
    try:
        secrets.append(str(json.loads(credentials).get("private_key") or ""))
    except (ValueError, AttributeError):
        pass
    return secrets


def gcs_cause(exc: BaseException, *, operation: str) -> Cause:
    """Kind and cause for anything google-cloud-storage (or requests under it) raises."""
    import requests

    if isinstance(exc, Corrupted):
        return CORRUPTED
    if REFUSED_PREFIX in str(exc):
        return Cause(AUTH, EGRESS_REFUSED)
    if isinstance(exc, api_exceptions.RetryError):
        # the client's retries ran out; what matters is the last failure
        if exc.cause is not None:
            return gcs_cause(exc.cause, operation=operation)
        return Cause(TRANSIENT, "timed out — the storage endpoint did not answer in time")
    if isinstance(exc, api_exceptions.GoogleAPICallError) and exc.code is not None:
        status = int(exc.code)
        message = str(exc.message)
        if status == 400 and _REFUSED_CHECKSUM.search(message):
            # GCS refused a body whose CRC32C is not the one sent: corrupted on the way
            return CORRUPTED
        if status == 401:
            return Cause(AUTH, "HTTP 401 — the service account key was rejected")
        if status == 403:
            return Cause(AUTH, "HTTP 403 — the service account may not use this bucket")
        if status == 404:
            # an upload cannot miss its object, so a 404 there is the bucket
            if operation == "put" or "bucket does not exist" in message:
                return Cause(NOT_FOUND, "HTTP 404 — no such bucket")
            return Cause(NOT_FOUND, "HTTP 404 — no such object")
        return cause_for_status(status)
    if isinstance(exc, auth_exceptions.RefreshError):
        return Cause(AUTH, "the service account key was rejected")
    if isinstance(exc, requests.exceptions.Timeout):
        return Cause(TRANSIENT, "timed out — the storage endpoint did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError | auth_exceptions.TransportError):
        text = str(exc)
        if "Connection refused" in text:
            return Cause(TRANSIENT, "connection refused — the storage endpoint is unreachable")
        if "resolve" in text or "Name or service not known" in text:
            return Cause(TRANSIENT, "dns error — the endpoint's host name does not resolve")
        return Cause(TRANSIENT, "cannot connect — the storage endpoint is unreachable")
    return Cause(TRANSIENT, f"unexpected {type(exc).__name__}")


def http_session(credentials: Any, egress_proxy: str | None) -> Any:
    """The client's HTTP session: no proxy from the environment; every connection through the
    egress guard when `egress_proxy` is given."""
    from google.auth.transport.requests import AuthorizedSession

    session = AuthorizedSession(credentials)
    session.trust_env = False
    if egress_proxy:
        session.proxies = {"http": egress_proxy, "https": egress_proxy}
    return session


def open_gcs(
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    egress_proxy: str | None = None,
) -> GcsObjectStore:
    """A customer's bucket; `egress_proxy` is the egress guard every connection goes through
    (None: private networks are allowed)."""
    return GcsObjectStore(
        str(configuration.get("bucket") or ""),
        configuration.get("credentials") or "",
        timeout_secs=timeout_secs,
        part_size=part_size,
        egress_proxy=egress_proxy,
    )


def _open(
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    allow_private_networks: bool = False,
) -> ObjectStore:
    return open_gcs(
        configuration,
        timeout_secs=timeout_secs,
        egress_proxy=egress_proxy_for(allow_private_networks),
    )


GCS = Provider(
    backend="gcs",
    noun="bucket",
    configuration=GcsConfiguration,
    answer=GcsConfigurationData,
    secret_fields=SECRET_FIELDS,
    bucket_name_error=bucket_name_error,
    open=_open,
)
