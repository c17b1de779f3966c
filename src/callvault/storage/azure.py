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
- Upload integrity (issue 14, `checks_uploads`): obstore 0.12 sends no Content-MD5 and has no
  option for it, so put_file alone goes through Microsoft's azure-storage-blob client with
  `validate_content=True`: a Put Blob (files up to `part_size`) carries the MD5 of the whole
  body, each Put Block (larger files) the MD5 of its block, and Azure refuses a body that does
  not match (`Md5Mismatch`; Azurite: `InvalidOperation`, "Provided contentMD5 doesn't match"),
  mapped to transient: the worker retries. A refused Put Blob stores nothing; refused blocks are
  never committed (Azure drops uncommitted blocks after a week), so the key holds nothing
  corrupt, at worst the previous intact blob. Cost per recording: the MD5 of the file, computed
  while it is sent (measured +1.5 ms of CPU per MB over obstore); no extra request, no download
  (docs/performance.md item 8). Memory: the SDK holds each block it hashes (`part_size`, up to
  `max_concurrency` at once; measured below obstore's peak). The same account key or SAS token
  signs both clients; head, get, delete and signing stay on obstore. The SDK's own loggers are
  held at WARNING (see below), so no request line with a SAS signature in its query string
  reaches a log, and its errors are reduced to a code or status (`sdk_cause`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from urllib.parse import parse_qsl

from obstore.store import AzureStore
from pydantic import ConfigDict, Field, field_validator, model_validator

from callvault.moments import as_utc
from callvault.outbound.egress import REFUSED_PREFIX
from callvault.storage import settings as storage_settings
from callvault.storage.base import (
    ObjectInfo,
    ObjectStore,
    StorageError,
    StorageErrorKind,
    check_metadata,
)
from callvault.storage.blocking import run_blocking
from callvault.storage.checked_endpoint import egress_proxy_for
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
    one_form,
    path_style_url,
)
from callvault.storage.error_mapping import (
    AUTH,
    CORRUPTED_UPLOAD,
    EGRESS_REFUSED,
    NOT_FOUND,
    TRANSIENT,
    Cause,
    Codes,
    Phrases,
    cause_for_code,
    cause_for_status,
    cause_from_text,
)
from callvault.storage.obstore_store import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    ObstoreObjectStore,
    client_options,
    retry_config,
)

if TYPE_CHECKING:
    # the SDK is imported where it is used: ~185 ms that a process with no Azure upload
    # (the CLI, the API) does not pay
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
    from azure.storage.blob import ContainerClient
    from obstore.store import AzureAccessKey, AzureConfig, AzureSASToken

# azure-core logs every request (URL, headers) at INFO and DEBUG, urllib3 every request line at
# DEBUG: with a SAS token the URL's query string holds its signature, which must never reach a
# log, whatever level the operator chooses
for _name in ("azure", "urllib3.connectionpool"):
    logging.getLogger(_name).setLevel(logging.WARNING)

BACKEND = "azure"
NOUN = "container"

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


@dataclass(frozen=True)
class Sas:
    """What a SAS token says about itself (its query parameters)."""

    pairs: list[tuple[str, str]]
    expires_at: datetime
    permissions: str

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now


def parse_sas(token: str) -> Sas | str:
    """The token's expiry and permissions, or why it cannot be a container SAS. Never repeats
    the token (its `sig` is the secret)."""
    pairs = parse_qsl(token.removeprefix("?"), keep_blank_values=True)
    values = dict(pairs)
    if not pairs or "sig" not in values:
        return "sas_token must be a SAS token (the query string of a SAS URL, with sig=...)"
    if "ss" in values or "srt" in values:
        # an account SAS reaches every container (and queue, table, file share) of the account
        return (
            "sas_token is an account SAS (ss/srt): give a container SAS (sr=c), which reaches "
            "only the container"
        )
    if values.get("sr", "c") != "c":
        return "sas_token must be a container SAS (sr=c)"
    if not values.get("se"):
        return "sas_token has no expiry (se=...)"
    try:
        expires = datetime.fromisoformat(values["se"])
    except ValueError:
        return "sas_token's expiry (se) is not an ISO 8601 time"
    expires = as_utc(expires)
    return Sas(pairs=pairs, expires_at=expires, permissions=values.get("sp", ""))


def sas_error(token: str, now: datetime) -> str | None:
    """Why `token` cannot be saved: malformed, already expired, or lacking create/write (to
    upload) or read (callvault reads what it stored: validate's probe, the console's player)."""
    sas = parse_sas(token)
    if isinstance(sas, str):
        return sas
    if sas.expired(now):
        return f"sas_token expired at {iso(sas.expires_at)}"
    if not set("cw") & set(sas.permissions):
        return (
            f"sas_token lacks create/write permission (sp={sas.permissions or 'none'}): "
            "callvault needs create or write to upload, and read"
        )
    if "r" not in sas.permissions:
        return (
            f"sas_token lacks read permission (sp={sas.permissions}): callvault reads what it "
            "stored (validate's probe, the console's player)"
        )
    return None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def blob_endpoint(account_name: str) -> str:
    template = storage_settings.current().azure_blob_endpoint
    # replace, not str.format: a template may contain other braces
    return template.replace("{account_name}", account_name).rstrip("/")


def canonical_url(endpoint: str, container: str, key: str) -> str:
    """`{endpoint}/{container}/{key}`: the blob URL."""
    return path_style_url(endpoint, container, key)


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
    # the body does not match the Content-MD5 sent with it: corrupted on the way, send it again
    "Md5Mismatch": (TRANSIENT, CORRUPTED_UPLOAD),
}
# the bulk delete reports its error as a sentence, not as a code (and Azurite a Content-MD5
# mismatch as InvalidOperation with this sentence)
ERROR_PHRASES: Phrases = {
    "The specified container does not exist": "ContainerNotFound",
    "The specified blob does not exist": "BlobNotFound",
    "Provided contentMD5 doesn't match": "Md5Mismatch",
}


# ---- configuration models (Telnyx's shape)


class AzureConfiguration(ConfigurationModel):
    """Azure Blob Storage."""

    model_config = ConfigDict(
        # exactly one way in: the account key (Telnyx's shape) or a container SAS (ours)
        json_schema_extra={"oneOf": [{"required": ["account_key"]}, {"required": ["sas_token"]}]}
    )

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
    account_key: Secret | None = Field(
        default=None,
        description="Azure Blob Storage account key (base64), " + MASK_NOTE + ". "
        "Write-only: answered masked (all but the last 4 characters replaced by '*').",
        json_schema_extra={"anyOf": [{"pattern": _BASE64}, {"pattern": MASK_PATTERN}]},
    )
    sas_token: Secret | None = Field(
        default=None,
        description="callvault extension, instead of account_key: a container SAS token "
        "(the query string of a container SAS URL, with or without the leading '?') with "
        "read and create or write permission, not expired; " + MASK_NOTE + ". Write-only: "
        "answered masked. Its expiry is answered as sas_expires_at.",
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
    def _account_key(cls, value: str | None) -> str | None:
        if value is None or looks_masked(value):
            return value
        reason = account_key_error(value)
        if reason is not None:
            raise invalid("account_key", reason)
        return value

    @field_validator("sas_token")
    @classmethod
    def _sas_token(cls, value: str | None) -> str | None:
        if value is None or looks_masked(value):
            return value
        reason = sas_error(value, datetime.now(UTC))
        if reason is not None:
            raise invalid("sas_token", reason)
        return value.removeprefix("?")

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        return one_form(
            data,
            cls.__name__,
            alternative="sas_token",
            fields=("account_key",),
            note="give either account_key or sas_token, not both",
        )


class AzureConfigurationData(AnswerModel):
    backend: Literal["azure"] = "azure"
    bucket: str
    account_name: str
    account_key: str | None = Field(default=None, description=MASKED_ANSWER)
    sas_token: str | None = Field(default=None, description=MASKED_ANSWER)
    sas_expires_at: str | None = Field(
        default=None, description="When the SAS token expires (read from the token)."
    )


def derived_fields(configuration: Mapping[str, Any]) -> dict[str, Any]:
    token = configuration.get("sas_token")
    if not isinstance(token, str) or not token:
        return {}
    sas = parse_sas(token)
    return {} if isinstance(sas, str) else {"sas_expires_at": iso(sas.expires_at)}


SECRET_FIELDS = ("account_key", "sas_token")


def sdk_cause(exc: BaseException) -> Cause:
    """Kind and cause for what azure-storage-blob raises: from the service's error code or the
    status, or the transport failure; never from the exception's own text beyond that."""
    from azure.core.exceptions import HttpResponseError

    if REFUSED_PREFIX in str(exc):
        return Cause(AUTH, EGRESS_REFUSED)
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        # the storage SDK sets error_code (a StorageErrorCode, or the raw code it does not know)
        raw = getattr(exc, "error_code", None)
        code = str(getattr(raw, "value", raw) or "")
        found = cause_for_code(code, ERROR_CODES)
        if found is None:
            message = str(exc.message or "")
            phrase_codes = (c for p, c in ERROR_PHRASES.items() if p in message)
            found = cause_for_code(next(phrase_codes, ""), ERROR_CODES)
        return found or cause_for_status(int(exc.status_code), missing="no such container")
    text = str(exc)
    if "timed out" in text or "Timeout" in type(exc).__name__:
        return Cause(TRANSIENT, "timed out — the storage endpoint did not answer in time")
    if "resolve" in text or "Name or service not known" in text:
        return Cause(TRANSIENT, "dns error — the endpoint's host name does not resolve")
    found = cause_from_text(text, codes={})
    return found or Cause(TRANSIENT, f"unexpected {type(exc).__name__}")


def upload_client(
    endpoint: str,
    container: str,
    credential: AzureNamedKeyCredential | AzureSasCredential,
    *,
    timeout_secs: float | None,
    part_size: int,
    egress_proxy: str | None = None,
) -> ContainerClient:
    """The SDK client put_file uploads with (Content-MD5 on every request that carries data):
    one request up to `part_size`, blocks of `part_size` above; timeouts and few, short
    retries as obstore's (the worker retries transient failures itself). Proxies from the
    environment are never used; `egress_proxy` is the egress guard (None: no proxy)."""
    from azure.storage.blob import ContainerClient, ExponentialRetry

    proxies = {"http": egress_proxy, "https": egress_proxy} if egress_proxy else None
    return ContainerClient(
        endpoint,
        container,
        credential=credential,
        max_single_put_size=part_size,
        max_block_size=part_size,
        # one quick retry: the worker retries transient failures on its own schedule. Two
        # retries with the SDK's ±3 s jitter made a refused connection take 8-11 s to fail
        # (seen in CI); one with ±1 s takes ~3 s (measured)
        retry_policy=ExponentialRetry(
            initial_backoff=1,
            increment_base=2,
            retry_total=1 if timeout_secs else 3,
            random_jitter_range=1,
        ),
        connection_timeout=min(5.0, timeout_secs or 5.0),
        read_timeout=timeout_secs or 300.0,
        use_env_settings=False,
        proxies=proxies,
    )


class AzureObjectStore(ObstoreObjectStore):
    codes = ERROR_CODES
    phrases = ERROR_PHRASES
    # every upload carries Content-MD5 (per block above part_size); Azure refuses a mismatch
    checks_uploads = True

    def __init__(
        self,
        store: AzureStore,
        *,
        uploader: ContainerClient,
        container: str,
        account_name: str,
        endpoint: str,
        account_key: str,
        sas: Sas | None = None,
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
            secrets=[
                account_key,
                *(value for name, value in (sas.pairs if sas else []) if name == "sig"),
            ],
        )
        self.account_name = account_name
        self.endpoint = endpoint
        self.sas = sas
        self._azure = store
        self._uploader = uploader

    def check_sas(self) -> None:
        """A SAS past its expiry: a permanent failure that says so (Azure would answer a bare
        403), before any request."""
        if self.sas is not None and self.sas.expired(datetime.now(UTC)):
            raise self._refused(
                f"the SAS token expired at {iso(self.sas.expires_at)} — save a new sas_token"
            )

    def _refused(self, cause: str) -> StorageError:
        return StorageError.build(
            StorageErrorKind.PERMANENT_AUTH,
            self.backend,
            self.bucket,
            cause,
            secrets=self._secrets,
            noun=self.noun,
        )

    async def put_file(
        self, key: str, source: Path | bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        self.check_sas()
        checked = check_metadata(metadata)
        if not isinstance(source, bytes) and not await asyncio.to_thread(Path(source).is_file):
            raise FileNotFoundError(source)  # our own source file is gone: a bug

        from azure.storage.blob import ContentSettings

        def send(body: bytes | BinaryIO, length: int) -> None:
            # validate_content: Content-MD5 on the Put Blob, or on each Put Block above
            # part_size, whether the body is bytes or a file
            self._uploader.get_blob_client(key).upload_blob(
                body,
                length=length,
                overwrite=True,
                validate_content=True,
                content_settings=ContentSettings(content_type=content_type),
                metadata=checked,
                max_concurrency=self.max_concurrency,
            )

        def upload() -> None:
            if isinstance(source, bytes):
                send(source, len(source))
                return
            with open(source, "rb") as file:
                send(file, os.fstat(file.fileno()).st_size)

        try:
            await run_blocking(upload)
        except Exception as exc:
            raise self._build(sdk_cause(exc)) from None

    async def head(self, key: str) -> ObjectInfo | None:
        self.check_sas()
        return await super().head(key)

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        self.check_sas()
        async for chunk in super().get_stream(key):
            yield chunk

    async def delete(self, key: str) -> None:
        self.check_sas()
        await super().delete(key)

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        if self.sas is not None:
            # a link would have to carry the customer's own token, which must never leave
            raise self._refused(
                "download links cannot be signed with a SAS token (an account key can)"
            )
        return await self.presigned_get(self._azure, key, expires_in)

    def canonical_url(self, key: str) -> str:
        return canonical_url(self.endpoint, self.bucket, key)


def open_azure(
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    max_concurrency: int = DEFAULT_CONCURRENCY,
    egress_proxy: str | None = None,
) -> AzureObjectStore:
    """A customer's container; `egress_proxy` is the egress guard every connection goes
    through (None: private networks are allowed)."""
    container = str(configuration.get("bucket") or "")
    account_name = str(configuration.get("account_name") or "")
    account_key = str(configuration.get("account_key") or "")
    sas_token = str(configuration.get("sas_token") or "")
    refused = _refusal(container, [account_key, sas_token])
    if reason := account_name_error(account_name):
        raise refused(f"invalid configuration — {reason}")
    access = _access(account_name, account_key, sas_token, refused)
    endpoint = blob_endpoint(account_name)
    config: AzureConfig = {
        "account_name": account_name,
        "endpoint": endpoint,
        "use_emulator": False,
        "skip_signature": False,
    }
    options = client_options(endpoint, timeout_secs)
    if egress_proxy:
        options["proxy_url"] = egress_proxy
    try:
        store = AzureStore(
            container,
            config=config,
            client_options=options,
            retry_config=retry_config(timeout_secs),
            credential_provider=access.provide,
        )
        uploader = upload_client(
            endpoint,
            container,
            access.signer,
            timeout_secs=timeout_secs,
            part_size=part_size,
            egress_proxy=egress_proxy,
        )
    except Exception as exc:
        raise refused(f"invalid configuration — {type(exc).__name__}") from None
    return AzureObjectStore(
        store,
        uploader=uploader,
        container=container,
        account_name=account_name,
        endpoint=endpoint,
        account_key=account_key,
        sas=access.sas,
        part_size=part_size,
        max_concurrency=max_concurrency,
    )


def _refusal(container: str, secrets: list[str]) -> Callable[[str], StorageError]:
    """How an unusable configuration is refused (permanent; the secrets never in the text)."""

    def refused(cause: str) -> StorageError:
        return StorageError.build(
            StorageErrorKind.PERMANENT_AUTH, BACKEND, container, cause, secrets=secrets, noun=NOUN
        )

    return refused


@dataclass(frozen=True)
class _Access:
    """One container's credentials, for obstore (`provide`) and for the SDK (`signer`)."""

    credential: AzureAccessKey | AzureSASToken
    signer: AzureNamedKeyCredential | AzureSasCredential
    sas: Sas | None

    def provide(self) -> AzureAccessKey | AzureSASToken:
        return self.credential


def _access(
    account_name: str, account_key: str, sas_token: str, refused: Callable[[str], StorageError]
) -> _Access:
    """A SAS token (checked, unexpired) if there is one, else the account key."""
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

    if sas_token:
        parsed = parse_sas(sas_token)
        if isinstance(parsed, str):
            raise refused(f"invalid configuration — {parsed}")
        if parsed.expired(datetime.now(UTC)):
            raise refused(
                f"the SAS token expired at {iso(parsed.expires_at)} — save a new sas_token"
            )
        return _Access(
            {"sas_token": parsed.pairs, "expires_at": None},
            AzureSasCredential(sas_token.removeprefix("?")),
            parsed,
        )
    if not account_key:
        raise refused("invalid configuration — the account key is required")
    if reason := account_key_error(account_key):
        raise refused(f"invalid configuration — {reason}")
    return _Access(
        {"access_key": account_key, "expires_at": None},
        AzureNamedKeyCredential(account_name, account_key),
        None,
    )


def _open(
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    allow_private_networks: bool = False,
) -> ObjectStore:
    return open_azure(
        configuration,
        timeout_secs=timeout_secs,
        egress_proxy=egress_proxy_for(allow_private_networks),
    )


AZURE = Provider(
    backend=BACKEND,
    noun=NOUN,
    configuration=AzureConfiguration,
    answer=AzureConfigurationData,
    secret_fields=SECRET_FIELDS,
    bucket_name_error=container_name_error,
    open=_open,
    derived_fields=derived_fields,
)
