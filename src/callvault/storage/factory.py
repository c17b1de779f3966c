"""Open a store: a customer's (from custom storage credentials) or the platform's default one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from callvault.storage.base import ObjectStore, StorageError, StorageErrorKind
from callvault.storage.local import LocalStore
from callvault.storage.registry import BY_BACKEND
from callvault.storage.s3 import open_s3_default


def open_custom_store(
    backend: str,
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    allow_private_networks: bool = False,
) -> ObjectStore:
    """The customer's bucket. Raises StorageError (permanent) for an unusable configuration:
    unknown backend, invalid bucket name, missing or malformed credentials.

    `timeout_secs` bounds each request and the client's own retries (the validate probe passes
    15); None means defaults sized for large uploads. Pass the setting `allow_private_networks`:
    when False (the default: fail closed), an s3-generic endpoint that resolves to a non-public
    address is refused before each request (checked_endpoint.py).
    """
    bucket = str(configuration.get("bucket") or "")
    provider = BY_BACKEND.get(backend)
    if provider is None:
        raise StorageError.build(
            StorageErrorKind.PERMANENT_AUTH, str(backend), bucket, "Unsupported backend"
        )
    # also keeps '/', '?' and the like out of request URLs
    if problem := provider.bucket_name_error(bucket):
        raise StorageError.build(
            StorageErrorKind.PERMANENT_NOT_FOUND,
            backend,
            bucket,
            f"invalid name — {problem}",
            noun=provider.noun,
        )
    return provider.open(
        configuration,
        timeout_secs=timeout_secs,
        allow_private_networks=allow_private_networks,
    )


def open_default_store(
    url: str, *, data_dir: Path, public_url: str, link_secret: bytes
) -> ObjectStore:
    """The platform's store, from CALLVAULT_DEFAULT_STORE:

    - `file://` (bare): `{data_dir}/recordings`; `file:///abs/dir` or `file://rel/dir`: that dir
      (relative to the working directory). Links signed with `link_secret`, under `public_url`.
    - `s3://bucket?region=…&endpoint=…`: credentials from AWS_ACCESS_KEY_ID /
      AWS_SECRET_ACCESS_KEY (or any other source obstore knows); presigned GET links.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        raw = unquote(parts.netloc + parts.path)
        root = Path(raw) if raw else Path(data_dir) / "recordings"
        return LocalStore(root, public_url, link_secret)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("s3 default store URL needs a bucket: s3://bucket?region=...")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"region", "endpoint"}
        if unknown:
            raise ValueError(f"unknown s3 default store options: {', '.join(sorted(unknown))}")
        return open_s3_default(
            parts.netloc, region=query.get("region"), endpoint=query.get("endpoint")
        )
    raise ValueError(f"unsupported default store URL {url!r}: use file:// or s3://")
