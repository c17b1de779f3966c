"""Azure Blob Storage containers, through obstore's AzureStore: everything about them —
configuration model, naming rules, secrets, error codes, URLs, how a store opens. The registry
(storage/registry.py) composes `AZURE`.

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
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from obstore.store import AzureStore
from pydantic import Field, field_validator

from callvault.storage.base import ObjectStore, StorageError, StorageErrorKind
from callvault.storage.configuration import (
    MASK_NOTE,
    MASK_PATTERN,
    MASKED_ANSWER,
    AnswerModel,
    ConfigurationModel,
    Provider,
    Secret,
    Text,
    checked_bucket,
    invalid,
    looks_masked,
)
from callvault.storage.error_mapping import AUTH, NOT_FOUND, TRANSIENT, Codes, Phrases
from callvault.storage.obstore_store import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    ObstoreObjectStore,
    client_options,
    retry_config,
)

if TYPE_CHECKING:
    from obstore.store import AzureAccessKey, AzureConfig

BACKEND = "azure"
NOUN = "container"
ENDPOINT_ENV = "CALLVAULT_AZURE_BLOB_ENDPOINT"
DEFAULT_ENDPOINT_TEMPLATE = "https://{account_name}.blob.core.windows.net"

# ---- rules (pure)

ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")
_BASE64 = r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_CONTAINER_CHARS = re.compile(r"^[a-z0-9-]+$")


def container_name_error(name: str) -> str | None:
    """None when `name` is a valid container name (Azure "Naming and referencing
    containers"), else why not."""
    if not 3 <= len(name) <= 63:
        return "container name must be 3 to 63 characters long"
    if not _CONTAINER_CHARS.match(name):
        return "container name may contain only lowercase letters, digits and hyphens"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "container name must begin and end with a letter or digit"
    if "--" in name:
        return "container name must not contain two consecutive hyphens"
    return None


def account_name_error(name: str) -> str | None:
    if not ACCOUNT_NAME.match(name):
        return "account_name must be 3 to 24 lowercase letters and digits"
    return None


def account_key_error(key: str) -> str | None:
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return "account_key must be base64"
    if not decoded:
        return "account_key must be base64"
    return None


def blob_endpoint(account_name: str) -> str:
    template = os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT_TEMPLATE
    # replace, not str.format: a template may contain other braces
    return template.replace("{account_name}", account_name).rstrip("/")


def canonical_url(endpoint: str, container: str, key: str) -> str:
    """`{endpoint}/{container}/{key}`, the key percent-encoded so that the URL stays valid."""
    return f"{endpoint.rstrip('/')}/{container}/{quote(key, safe='/')}"


ERROR_CODES: Codes = {
    "AuthenticationFailed": (AUTH, "the account key is wrong"),
    "AuthorizationFailure": (AUTH, "the account key is wrong or may not use this container"),
    "AuthorizationPermissionMismatch": (AUTH, "the credentials may not use this container"),
    "InvalidAuthenticationInfo": (AUTH, "the authentication information is invalid"),
    "AccountIsDisabled": (AUTH, "the storage account is disabled"),
    "ContainerNotFound": (NOT_FOUND, "no such container"),
    "BlobNotFound": (NOT_FOUND, "no such blob"),
    "InvalidResourceName": (NOT_FOUND, "the container name is invalid"),
    "NoSuchBucket": (NOT_FOUND, "no such container"),
    "ServerBusy": (TRANSIENT, "the storage is busy"),
    "OperationTimedOut": (TRANSIENT, "the storage timed out"),
    "InternalError": (TRANSIENT, "the storage had an internal error"),
}
# the bulk delete reports its error as a sentence, not as a code
ERROR_PHRASES: Phrases = {
    "The specified container does not exist": "ContainerNotFound",
    "The specified blob does not exist": "BlobNotFound",
}


# ---- configuration models (Telnyx's shape)


class AzureConfiguration(ConfigurationModel):
    """Azure Blob Storage."""

    backend: Literal["azure"] = "azure"
    bucket: Text = Field(
        description="The blob container to store recording files in (Azure naming rules: "
        "no two consecutive hyphens).",
        json_schema_extra={"pattern": r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"},
    )
    account_name: Text = Field(
        description="Azure Blob Storage account name.",
        json_schema_extra={"pattern": ACCOUNT_NAME.pattern},
    )
    account_key: Secret = Field(
        description="Azure Blob Storage account key (base64), " + MASK_NOTE + ". "
        "Write-only: answered masked (all but the last 4 characters replaced by '*').",
        json_schema_extra={"anyOf": [{"pattern": _BASE64}, {"pattern": MASK_PATTERN}]},
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return checked_bucket(container_name_error, value)

    @field_validator("account_name")
    @classmethod
    def _account_name(cls, value: str) -> str:
        reason = account_name_error(value)
        if reason is not None:
            raise invalid("account_name", reason)
        return value

    @field_validator("account_key")
    @classmethod
    def _account_key(cls, value: str) -> str:
        if looks_masked(value):
            return value
        reason = account_key_error(value)
        if reason is not None:
            raise invalid("account_key", reason)
        return value


class AzureConfigurationData(AnswerModel):
    backend: Literal["azure"] = "azure"
    bucket: str
    account_name: str
    account_key: str = Field(description=MASKED_ANSWER)


SECRET_FIELDS = ("account_key",)


class AzureObjectStore(ObstoreObjectStore):
    codes = ERROR_CODES
    phrases = ERROR_PHRASES

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
            backend=BACKEND,
            bucket=container,
            noun=NOUN,
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
        return canonical_url(self.endpoint, self.bucket, key)


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

    def refused(cause: str) -> StorageError:
        return StorageError.build(
            StorageErrorKind.PERMANENT_AUTH,
            BACKEND,
            container,
            cause,
            secrets=[account_key],
            noun=NOUN,
        )

    if reason := account_name_error(account_name):
        raise refused(f"invalid configuration — {reason}")
    if not account_key:
        raise refused("invalid configuration — the account key is required")
    if reason := account_key_error(account_key):
        raise refused(f"invalid configuration — {reason}")

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
        raise refused(f"invalid configuration — {type(exc).__name__}") from None
    return AzureObjectStore(
        store,
        container=container,
        account_name=account_name,
        endpoint=endpoint,
        account_key=account_key,
        part_size=part_size,
        max_concurrency=max_concurrency,
    )


def _open(
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    allow_private_networks: bool = True,
) -> ObjectStore:
    return open_azure(configuration, timeout_secs=timeout_secs)


AZURE = Provider(
    backend=BACKEND,
    noun=NOUN,
    configuration=AzureConfiguration,
    answer=AzureConfigurationData,
    secret_fields=SECRET_FIELDS,
    bucket_name_error=container_name_error,
    open=_open,
)
