"""Storage's settings for one test, as `callvault serve` would configure them from its
environment (storage/settings.py: the providers read no environment themselves)."""

from __future__ import annotations

import dataclasses

import pytest

from callvault.storage import settings as storage_settings
from callvault.storage.settings import (
    AZURE_BLOB_ENDPOINT_ENV,
    PRINCIPAL_ENV,
    STALL_ENV,
    STS_ENDPOINTS_ENV,
    THREADS_ENV,
    StorageSettings,
)

FIELD_OF = {
    AZURE_BLOB_ENDPOINT_ENV: "azure_blob_endpoint",
    STALL_ENV: "stall_secs",
    THREADS_ENV: "threads",
    STS_ENDPOINTS_ENV: "sts_endpoints",
    PRINCIPAL_ENV: "aws_principal_arn",
}


def set_storage_env(monkeypatch: pytest.MonkeyPatch, name: str, value: str | None = None) -> None:
    """Storage configured as if `name` were `value` (None: unset), the rest as it is; undone
    after the test."""
    field = FIELD_OF[name]
    parsed = StorageSettings.from_environ({} if value is None else {name: value})
    changed = dataclasses.replace(storage_settings.current(), **{field: getattr(parsed, field)})
    monkeypatch.setattr(storage_settings, "_current", changed)
