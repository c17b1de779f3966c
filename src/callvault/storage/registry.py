"""The one list of custom-storage backends. Adding a backend is one provider module and one
line here; everything else (the API's configuration shapes, masking, redaction, opening a
store) reads this list.

The order is the order in which the API's OpenAPI document lists the configuration shapes.
"""

from __future__ import annotations

from callvault.storage.azure import AZURE
from callvault.storage.configuration import Provider
from callvault.storage.gcs import GCS
from callvault.storage.s3 import S3, S3_GENERIC

PROVIDERS: tuple[Provider, ...] = (GCS, S3, S3_GENERIC, AZURE)

BY_BACKEND: dict[str, Provider] = {provider.backend: provider for provider in PROVIDERS}
BACKENDS: tuple[str, ...] = tuple(BY_BACKEND)


def provider_for(backend: str) -> Provider | None:
    return BY_BACKEND.get(backend)


def bucket_name_error(backend: str, name: str) -> str | None:
    """None when `name` is a valid bucket (container) name for `backend`, else why not."""
    provider = BY_BACKEND.get(backend)
    if provider is None:
        return f"unknown backend {backend!r}"
    return provider.bucket_name_error(name)
