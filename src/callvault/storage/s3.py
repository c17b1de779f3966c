"""AWS S3 (`s3`) and S3-compatible stores (`s3-generic`: MinIO, R2, B2, Wasabi, SeaweedFS...).

Quirks kept here:
- obstore reads AWS_* environment variables on its own. The platform's own credentials
  (AWS_SESSION_TOKEN, AWS_ENDPOINT...) must never mix into a customer's store, so custom stores
  pin credentials through a credential provider and set the endpoint explicitly.
- `s3`: the AWS endpoint of the configured region, virtual-hosted style (path style when the
  bucket name has dots, which break TLS for virtual hosts); AWS_ENDPOINT_URL overrides the
  endpoint (for tests and private clouds), then path style.
- `s3-generic`: the configured endpoint, path style, and nothing optional that S3-compatible
  stores reject: no checksum headers (obstore sends none unless configured), no tagging
  header, single-object DELETE instead of the bulk DeleteObjects call (it needs Content-MD5,
  which several of them do not implement).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from obstore.store import S3Store

from callvault.storage import layout
from callvault.storage.base import StorageError, StorageErrorKind
from callvault.storage.checked_endpoint import without_cross_host_redirects
from callvault.storage.obstore_store import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    ObstoreObjectStore,
    client_options,
    retry_config,
)

if TYPE_CHECKING:
    from obstore.store import S3Config, S3Credential


class S3ObjectStore(ObstoreObjectStore):
    def __init__(
        self,
        store: S3Store,
        *,
        backend: str,
        bucket: str,
        endpoint: str | None,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        secrets: Iterable[str] = (),
    ) -> None:
        super().__init__(
            store,
            backend=backend,
            bucket=bucket,
            part_size=part_size,
            max_concurrency=max_concurrency,
            secrets=secrets,
        )
        self.endpoint = endpoint
        self._s3 = store

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        return await self.presigned_get(self._s3, key, expires_in)

    def canonical_url(self, key: str) -> str:
        if self.backend == "s3-generic":
            return layout.canonical_url(
                "s3-generic", bucket=self.bucket, key=key, endpoint=self.endpoint
            )
        return layout.canonical_url("s3", bucket=self.bucket, key=key)


def _pinned_credentials(access_key_id: str, secret_access_key: str) -> Any:
    credential: S3Credential = {
        "access_key_id": access_key_id,
        "secret_access_key": secret_access_key,
        "token": None,
        "expires_at": None,  # static keys: obstore caches them and never asks again
    }

    def provide() -> S3Credential:
        return credential

    return provide


def aws_endpoint(bucket: str, region: str) -> tuple[str, bool]:
    """(endpoint, virtual_hosted) for a bucket in an AWS region."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    if "." in bucket:
        return f"https://s3.{region}.{suffix}", False
    return f"https://{bucket}.s3.{region}.{suffix}", True


def open_s3(
    configuration: Mapping[str, Any],
    *,
    generic: bool,
    timeout_secs: float | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    max_concurrency: int = DEFAULT_CONCURRENCY,
) -> S3ObjectStore:
    """A customer's bucket from its Telnyx-shaped configuration."""
    backend = "s3-generic" if generic else "s3"
    bucket = str(configuration.get("bucket") or "")
    secret = str(configuration.get("aws_secret_access_key") or "")

    def invalid(cause: str) -> StorageError:
        return StorageError.build(
            StorageErrorKind.PERMANENT_AUTH, backend, bucket, cause, secrets=[secret]
        )

    access_key = str(configuration.get("aws_access_key_id") or "")
    region = str(configuration.get("region") or "")
    if not access_key or not secret:
        raise invalid("invalid configuration — the access key id and secret key are required")
    if generic:
        endpoint = str(configuration.get("endpoint") or "").rstrip("/")
        if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).netloc:
            raise invalid("invalid configuration — the endpoint must be an http(s) URL")
        region = region or "us-east-1"  # most S3-compatible stores ignore it; SigV4 needs one
        virtual_hosted = False
    elif os.environ.get("AWS_ENDPOINT_URL"):
        endpoint, virtual_hosted = os.environ["AWS_ENDPOINT_URL"].rstrip("/"), False
    else:
        if not region:
            raise invalid("invalid configuration — the region is required")
        endpoint, virtual_hosted = aws_endpoint(bucket, region)
    config: S3Config = {
        "region": region,
        "endpoint": endpoint,
        "virtual_hosted_style_request": virtual_hosted,
        "skip_signature": False,
    }
    options = client_options(endpoint, timeout_secs)
    if generic:
        config["disable_tagging"] = True
        config["disable_bulk_delete"] = True
        # a redirect to another host would reach an address nobody checked
        options = without_cross_host_redirects(options, endpoint)
    try:
        store = S3Store(
            bucket,
            config=config,
            client_options=options,
            retry_config=retry_config(timeout_secs),
            credential_provider=_pinned_credentials(access_key, secret),
        )
    except Exception as exc:
        raise invalid(f"invalid configuration — {type(exc).__name__}") from None
    return S3ObjectStore(
        store,
        backend=backend,
        bucket=bucket,
        # s3: the AWS endpoint is implied by s3:// URLs; s3-generic: part of the canonical URL
        endpoint=endpoint if generic else None,
        part_size=part_size,
        max_concurrency=max_concurrency,
        secrets=[secret],
    )


def open_s3_default(
    bucket: str,
    *,
    region: str | None,
    endpoint: str | None,
    timeout_secs: float | None = None,
) -> S3ObjectStore:
    """The platform's own bucket: credentials come from the environment (AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY, or whatever else obstore finds: session tokens, instance roles)."""
    config: S3Config = {"skip_signature": False}
    if region:
        config["region"] = region
    if endpoint:
        config["endpoint"] = endpoint.rstrip("/")
        config["virtual_hosted_style_request"] = False
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    try:
        store = S3Store(
            bucket,
            config=config,
            client_options=client_options(endpoint, timeout_secs),
            retry_config=retry_config(timeout_secs),
        )
    except Exception as exc:
        raise StorageError.build(
            StorageErrorKind.PERMANENT_AUTH,
            "s3",
            bucket,
            f"invalid configuration — {type(exc).__name__}",
            secrets=[secret],
        ) from None
    return S3ObjectStore(store, backend="s3", bucket=bucket, endpoint=None, secrets=[secret])
