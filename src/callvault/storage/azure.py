"""Azure Blob Storage containers, through obstore's AzureStore.

Quirks kept here:
- The blob endpoint comes from the template in CALLVAULT_AZURE_BLOB_ENDPOINT (default
  `https://{account_name}.blob.core.windows.net`; Azurite: `http://127.0.0.1:PORT/{account_name}`).
- obstore reads AZURE_* environment variables on its own, and a bearer token found there beats
  an account key. The account key is pinned through a credential provider so that nothing from
  the platform's environment reaches a customer's container, and so that signed URLs are
  service SAS made locally with that key (not user-delegation SAS, which needs a network call).
- The account name becomes part of a host name: it is checked against Azure's rules
  (3-24 lowercase letters and digits) so that it cannot point the request elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from obstore.store import AzureStore

from callvault.storage import layout
from callvault.storage.base import StorageError, StorageErrorKind
from callvault.storage.obstore_store import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    ObstoreObjectStore,
    client_options,
    retry_config,
)

if TYPE_CHECKING:
    from obstore.store import AzureAccessKey, AzureConfig

ENDPOINT_ENV = "CALLVAULT_AZURE_BLOB_ENDPOINT"
DEFAULT_ENDPOINT_TEMPLATE = "https://{account_name}.blob.core.windows.net"
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")


def blob_endpoint(account_name: str) -> str:
    template = os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT_TEMPLATE
    # replace, not str.format: a template may contain other braces
    return template.replace("{account_name}", account_name).rstrip("/")


class AzureObjectStore(ObstoreObjectStore):
    def __init__(
        self,
        store: AzureStore,
        *,
        container: str,
        account_name: str,
        endpoint: str,
        account_key: str,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        super().__init__(
            store,
            backend="azure",
            bucket=container,
            part_size=part_size,
            max_concurrency=max_concurrency,
            secrets=[account_key],
        )
        self.account_name = account_name
        self.endpoint = endpoint
        self._azure = store

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        return await self.presigned_get(self._azure, key, expires_in)

    def canonical_url(self, key: str) -> str:
        return layout.canonical_url(
            "azure",
            bucket=self.bucket,
            key=key,
            endpoint=self.endpoint,
            account_name=self.account_name,
        )


def open_azure(
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    max_concurrency: int = DEFAULT_CONCURRENCY,
) -> AzureObjectStore:
    container = str(configuration.get("bucket") or "")
    account_name = str(configuration.get("account_name") or "")
    account_key = str(configuration.get("account_key") or "")

    def invalid(cause: str) -> StorageError:
        return StorageError.build(
            StorageErrorKind.PERMANENT_AUTH, "azure", container, cause, secrets=[account_key]
        )

    if not _ACCOUNT_NAME.match(account_name):
        raise invalid(
            "invalid configuration — the account name must be 3-24 lowercase letters and digits"
        )
    if not account_key:
        raise invalid("invalid configuration — the account key is required")
    try:
        base64.b64decode(account_key, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("invalid configuration — the account key is not base64") from None

    endpoint = blob_endpoint(account_name)
    access_key: AzureAccessKey = {"access_key": account_key, "expires_at": None}

    def provide() -> AzureAccessKey:
        return access_key

    config: AzureConfig = {
        "account_name": account_name,
        "endpoint": endpoint,
        "use_emulator": False,
        "skip_signature": False,
    }
    try:
        store = AzureStore(
            container,
            config=config,
            client_options=client_options(endpoint, timeout_secs),
            retry_config=retry_config(timeout_secs),
            credential_provider=provide,
        )
    except Exception as exc:
        raise invalid(f"invalid configuration — {type(exc).__name__}") from None
    return AzureObjectStore(
        store,
        container=container,
        account_name=account_name,
        endpoint=endpoint,
        account_key=account_key,
        part_size=part_size,
        max_concurrency=max_concurrency,
    )
