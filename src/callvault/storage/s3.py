"""AWS S3 (`s3`) and S3-compatible stores (`s3-generic`: MinIO, R2, B2, Wasabi, SeaweedFS...):
everything about them — configuration models, naming rules, secrets, error codes, URLs, how a
store opens. The registry (storage/registry.py) composes `S3` and `S3_GENERIC`.

Quirks kept here:
- obstore reads AWS_* environment variables on its own. The platform's own credentials
  (AWS_SESSION_TOKEN, AWS_ENDPOINT...) must never mix into a customer's store, so custom stores
  pin credentials through a credential provider and set the endpoint explicitly.
- `s3`: the AWS endpoint of the configured region, virtual-hosted style (path style when the
  bucket name has dots, which break TLS for virtual hosts); AWS_ENDPOINT_URL overrides the
  endpoint (for tests and private clouds), then path style.
- `s3-generic`: the configured endpoint, path style, and nothing optional that S3-compatible
  stores reject: no tagging header, single-object DELETE instead of the bulk DeleteObjects
  call (it needs Content-MD5, which several of them do not implement).
- Uploads carry `x-amz-checksum-sha256` (every part of a multipart upload too, from a file or
  from bytes alike: it is the store's `checksum_algorithm`, not a put option): the store
  computes the checksum of what it received and refuses a mismatch (BadDigest), so a body
  corrupted on the way is never kept (issue 14; `tests/storage/test_upload_integrity.py`
  proves it through a byte-flipping proxy). The worker then needs no HEAD after the put
  (`checks_uploads`). The SigV4 payload hash does not do this: SeaweedFS, for one, does not
  check it (measured through the same proxy). S3-compatible stores that implement the
  additional checksums (MinIO, SeaweedFS, Ceph RGW, R2...) check it; one that ignored it would
  be no worse off than before: the HEAD never saw a flipped byte either (it compared the size
  and the sha256 metadata callvault itself had sent).
- Unless private networks are allowed, every connection of a customer's store (redirects and
  STS included) goes through the egress guard (outbound/egress.py), which connects only to
  addresses the policy allows; a customer-chosen endpoint is also checked before each request,
  for a clear refusal (checked_endpoint.py).
- Bucket naming (AWS "General purpose bucket naming rules"): AWS reserves some prefixes and
  suffixes that other S3-compatible stores do not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from obstore.store import S3Store
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

from callvault.outbound.addresses import URL_PATTERN, url_shape_error
from callvault.storage.aws_roles import (
    ROLE_ARN,
    ROLE_ARN_PATTERN,
    SESSIONS,
    RoleError,
    RoleSessions,
    RoleTarget,
    Session,
    session_name_for,
    sts_endpoint,
    sts_refusal,
)
from callvault.storage.base import ObjectInfo, ObjectStore, StorageError, StorageErrorKind
from callvault.storage.checked_endpoint import EndpointCheckedStore, egress_proxy_for
from callvault.storage.configuration import (
    CONNECTION_ID_KEY,
    EXTERNAL_ID_KEY,
    MASK_NOTE,
    MASKED_ANSWER,
    NO_WHITESPACE,
    AnswerModel,
    ConfigurationModel,
    Provider,
    Secret,
    Text,
    checked_bucket,
    invalid,
    looks_masked,
    no_whitespace,
    one_form,
    path_style_url,
)
from callvault.storage.error_mapping import AUTH, CORRUPTED_UPLOAD, NOT_FOUND, TRANSIENT, Codes
from callvault.storage.obstore_store import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    ObstoreObjectStore,
    client_options,
    retry_config,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config, S3Credential

# ---- rules (pure)

# AWS region names: us-east-1, ap-southeast-2, us-gov-west-1, eu-isoe-west-1, ...
AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# S3-compatible stores use their own names: auto (R2), us-west-004 (B2), fr-par, garage, ...
GENERIC_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def _bucket_error(name: str, *, aws: bool) -> str | None:
    if not 3 <= len(name) <= 63:
        return "bucket name must be 3 to 63 characters long"
    if not _BUCKET_CHARS.match(name):
        return "bucket name may contain only lowercase letters, digits, dots and hyphens"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "bucket name must begin and end with a letter or digit"
    if ".." in name:
        return "bucket name must not contain two adjacent dots"
    if _is_ip_address(name):
        return "bucket name must not be formatted as an IP address"
    # AWS reserves these for its own features; other S3-compatible stores do not
    if aws and name.startswith(_RESERVED_PREFIXES):
        return "bucket name must not start with a prefix AWS reserves (xn--, sthree-, ...)"
    if aws and name.endswith(_RESERVED_SUFFIXES):
        return "bucket name must not end with a suffix AWS reserves (-s3alias, --ol-s3, ...)"
    return None


def aws_bucket_error(name: str) -> str | None:
    """None when `name` is a valid AWS S3 bucket name, else why not."""
    return _bucket_error(name, aws=True)


def generic_bucket_error(name: str) -> str | None:
    """None when `name` is a valid bucket name for an S3-compatible store, else why not."""
    return _bucket_error(name, aws=False)


def canonical_url(bucket: str, key: str) -> str:
    """`s3://bucket/key`, the key as is (as the seed shows)."""
    return f"s3://{bucket}/{key}"


def generic_canonical_url(endpoint: str, bucket: str, key: str) -> str:
    """`{endpoint}/{bucket}/{key}`, the key percent-encoded so that the URL stays valid."""
    if not endpoint:
        raise ValueError("s3-generic needs its endpoint")
    return path_style_url(endpoint, bucket, key)


# Service error codes -> kind and an explanation a customer can act on
ERROR_CODES: Codes = {
    "SignatureDoesNotMatch": (AUTH, "the secret key is wrong"),
    "InvalidAccessKeyId": (AUTH, "the access key id is unknown"),
    "AccessDenied": (AUTH, "the credentials may not use this bucket"),
    "InvalidToken": (AUTH, "the session token is invalid"),
    "ExpiredToken": (AUTH, "the session token has expired"),
    "AuthorizationHeaderMalformed": (AUTH, "the region does not match the bucket's"),
    "AllAccessDisabled": (AUTH, "all access to this bucket is disabled"),
    "AccountProblem": (AUTH, "the storage account has a problem"),
    "NoSuchBucket": (NOT_FOUND, "no such bucket"),
    "PermanentRedirect": (NOT_FOUND, "the bucket is in another region"),
    "InvalidBucketName": (NOT_FOUND, "the bucket name is invalid"),
    "NoSuchKey": (NOT_FOUND, "no such object"),
    "RequestTimeTooSkewed": (TRANSIENT, "this server's clock differs from the storage's"),
    "SlowDown": (TRANSIENT, "the storage asks to slow down"),
    "ServiceUnavailable": (TRANSIENT, "the storage service is unavailable"),
    "InternalError": (TRANSIENT, "the storage had an internal error"),
    # the body's checksum did not match what arrived (UPLOAD_CHECKSUM): corrupted on the
    # way, worth another try
    "BadDigest": (TRANSIENT, CORRUPTED_UPLOAD),
    "XAmzContentChecksumMismatch": (TRANSIENT, CORRUPTED_UPLOAD),
    "XAmzContentSHA256Mismatch": (TRANSIENT, CORRUPTED_UPLOAD),
}


# ---- configuration models (Telnyx's shapes)


class _S3Fields(ConfigurationModel):
    model_config = ConfigDict(
        # exactly one way in: access keys (Telnyx's shape) or a role to assume (ours)
        json_schema_extra={
            "oneOf": [
                {"required": ["aws_access_key_id", "aws_secret_access_key"]},
                {"required": ["role_arn"]},
            ]
        }
    )

    bucket: Text = Field(description="Name of the bucket to be used to store recording files.")
    region: Text = Field(description="Region where the bucket is located.")
    aws_access_key_id: Text | None = Field(
        default=None,
        description="AWS credentials access key id (not a secret: answered in clear).",
        json_schema_extra={"pattern": NO_WHITESPACE},
    )
    aws_secret_access_key: Secret | None = Field(
        default=None,
        description="AWS secret access key, " + MASK_NOTE + ". Write-only: answered masked "
        "(all but the last 4 characters replaced by '*').",
        json_schema_extra={"pattern": NO_WHITESPACE},
    )
    role_arn: Text | None = Field(
        default=None,
        description=(
            "callvault extension, instead of the two access-key fields: an IAM role that "
            "callvault assumes with STS AssumeRole, with the ExternalId that "
            "GET .../aws_role_setup shows (e.g. arn:aws:iam::123456789012:role/NAME)."
        ),
        json_schema_extra={"pattern": ROLE_ARN_PATTERN},
    )

    @field_validator("aws_access_key_id")
    @classmethod
    def _access_key(cls, value: str | None) -> str | None:
        return None if value is None else no_whitespace(value, "aws_access_key_id")

    @field_validator("aws_secret_access_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is None or looks_masked(value):  # a mask is resolved by the service
            return value
        return no_whitespace(value, "aws_secret_access_key")

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        if value is not None and not ROLE_ARN.match(value):
            raise invalid(
                "role_arn",
                "role_arn must be an IAM role ARN such as arn:aws:iam::123456789012:role/NAME",
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        return one_form(
            data,
            cls.__name__,
            alternative="role_arn",
            fields=("aws_access_key_id", "aws_secret_access_key"),
            note="give either role_arn or aws_access_key_id + aws_secret_access_key, not both",
        )


class S3Configuration(_S3Fields):
    """AWS S3."""

    backend: Literal["s3"] = "s3"
    bucket: Text = Field(
        description="Name of the bucket to be used to store recording files (AWS naming rules).",
        json_schema_extra={"pattern": _BUCKET_PATTERN},
    )
    region: Text = Field(
        description="AWS region where the bucket is located, e.g. us-east-1.",
        json_schema_extra={"pattern": AWS_REGION.pattern},
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return checked_bucket(aws_bucket_error, value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not AWS_REGION.match(value):
            raise invalid("region", "region must be an AWS region name such as us-east-1")
        return value


def endpoint_error(value: str) -> str | None:
    """Why `value` cannot be an s3-generic endpoint, or None."""
    reason = url_shape_error(value)
    if reason is not None:
        return f"endpoint: {reason}"
    if "?" in value or "#" in value:
        return "endpoint must not contain a query or a fragment"
    return None


class S3GenericConfiguration(_S3Fields):
    """An S3-compatible store (MinIO, Cloudflare R2, Wasabi, Backblaze B2, SeaweedFS...)."""

    backend: Literal["s3-generic"] = "s3-generic"
    bucket: Text = Field(
        description="Name of the bucket to be used to store recording files (S3 naming rules).",
        json_schema_extra={"pattern": _BUCKET_PATTERN},
    )
    region: Text = Field(
        description="Region name the store expects, e.g. us-east-1 or auto.",
        json_schema_extra={"pattern": GENERIC_REGION.pattern},
    )
    endpoint: Text = Field(
        description=(
            "http(s) URL of the S3-compatible endpoint, optionally with a path prefix; a "
            "trailing '/' is dropped. Must not resolve to a private network unless the "
            "operator allows it."
        ),
        json_schema_extra={"format": "uri", "pattern": URL_PATTERN},
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return checked_bucket(generic_bucket_error, value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not GENERIC_REGION.match(value):
            raise invalid(
                "region",
                "region must be a region name such as us-east-1 or auto (letters, "
                "digits, '-', '_', '.'; at most 64 characters)",
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        reason = endpoint_error(value)
        if reason is not None:
            raise invalid("endpoint", reason)
        # a trailing slash would double the slash in {endpoint}/{bucket}/{key}
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _sts_allowed(cls, data: Any) -> Any:
        # AssumeRole is signed with this server's own identity: only to STS it allows
        if not isinstance(data, dict) or not isinstance(data.get("role_arn"), str):
            return data
        endpoint = data.get("endpoint")
        if not isinstance(endpoint, str) or endpoint_error(endpoint) is not None:
            return data  # the endpoint's own error says more
        if sts_endpoint(generic_endpoint=endpoint, region="us-east-1") is None:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=invalid("sts_endpoint", sts_refusal(endpoint.rstrip("/"))),
                        loc=("role_arn",),
                        input=data["role_arn"],
                    )
                ],
            )
        return data


class S3ConfigurationData(AnswerModel):
    backend: Literal["s3"] = "s3"
    bucket: str
    region: str
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = Field(default=None, description=MASKED_ANSWER)
    role_arn: str | None = None


class S3GenericConfigurationData(AnswerModel):
    backend: Literal["s3-generic"] = "s3-generic"
    bucket: str
    region: str
    endpoint: str
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = Field(default=None, description=MASKED_ANSWER)
    role_arn: str | None = None


SECRET_FIELDS = ("aws_secret_access_key",)


# the store checks it on every PUT and UploadPart (see the module's docstring)
UPLOAD_CHECKSUM = "sha256"


class S3ObjectStore(ObstoreObjectStore):
    codes = ERROR_CODES
    checks_uploads = True  # UPLOAD_CHECKSUM on every put

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
        if self.endpoint is not None:
            return generic_canonical_url(self.endpoint, self.bucket, key)
        return canonical_url(self.bucket, key)


# what a bucket answers when a session is no longer good: refresh it and try once more
_SESSION_REJECTED = (
    "ExpiredToken —",
    "InvalidToken —",
    "InvalidAccessKeyId —",
    # obstore could not get credentials from our provider: asking again through session()
    # turns that into the AssumeRole reason
    "unauthenticated — credentials rejected",
)


def _session_rejected(error: StorageError) -> bool:
    return error.kind is StorageErrorKind.PERMANENT_AUTH and any(
        marker in error.reason for marker in _SESSION_REJECTED
    )


def uses_role(configuration: Mapping[str, Any]) -> bool:
    return bool(configuration.get("role_arn"))


def _role_target(
    configuration: Mapping[str, Any],
    *,
    generic: bool,
    endpoint: str,
    region: str,
    egress_proxy: str | None,
) -> RoleTarget | str:
    external_id = str(configuration.get(EXTERNAL_ID_KEY) or "")
    connection_id = str(configuration.get(CONNECTION_ID_KEY) or "")
    if not external_id or not connection_id:
        return "no ExternalId was generated for this connection"
    sts = sts_endpoint(generic_endpoint=endpoint if generic else None, region=region)
    if generic and sts is None:
        return sts_refusal(endpoint)
    return RoleTarget(
        role_arn=str(configuration["role_arn"]),
        external_id=external_id,
        session_name=session_name_for(connection_id),
        sts_endpoint=sts,
        region=region or "us-east-1",
        egress_proxy=egress_proxy,
    )


class RoleS3ObjectStore(S3ObjectStore):
    """A bucket reached through an assumed role. The session comes from the process's cache
    (aws_roles.py) before each operation, so an AssumeRole refusal reads as what it is; when
    the bucket rejects a session (it ended early, or was revoked) the session is dropped, a new
    one assumed and the operation tried once more."""

    connects_to_sign = True  # a link needs a session, which may mean a request to STS

    def __init__(
        self,
        build: Any,
        target: RoleTarget,
        sessions: RoleSessions,
        *,
        backend: str,
        bucket: str,
        endpoint: str | None,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        super().__init__(
            build(),
            backend=backend,
            bucket=bucket,
            endpoint=endpoint,
            part_size=part_size,
            max_concurrency=max_concurrency,
        )
        self._make_store = build
        self.target = target
        self.sessions = sessions
        self._signer: S3Store | None = None
        self._signer_session: Session | None = None

    def rebuild(self) -> None:
        """A new obstore store: obstore keeps its own copy of the session until it expires."""
        self._store = self._s3 = self._make_store()

    async def session(self) -> Session:
        try:
            session = await asyncio.to_thread(self.sessions.get, self.target)
        except RoleError as exc:
            raise StorageError.build(exc.kind, self.backend, self.bucket, exc.reason) from None
        # session credentials never appear in a reason
        self._secrets = (session.secret_access_key, session.token)
        return session

    async def _with_session(self, operation: Any) -> Any:
        await self.session()
        try:
            return await operation()
        except StorageError as exc:
            if not _session_rejected(exc):
                raise
        self.sessions.forget(self.target)
        self.rebuild()
        await self.session()
        return await operation()

    async def put_file(
        self, key: str, source: Path | bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        async def put() -> None:
            await S3ObjectStore.put_file(
                self, key, source, content_type=content_type, metadata=metadata
            )

        await self._with_session(put)

    async def head(self, key: str) -> ObjectInfo | None:
        async def head() -> ObjectInfo | None:
            return await S3ObjectStore.head(self, key)

        result: ObjectInfo | None = await self._with_session(head)
        return result

    async def delete(self, key: str) -> None:
        async def delete() -> None:
            await S3ObjectStore.delete(self, key)

        await self._with_session(delete)

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        await self.session()
        async for chunk in S3ObjectStore.get_stream(self, key):
            yield chunk

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        # signed with the current session, which has more than REFRESH_BEFORE_SECONDS left (a
        # store of its own, so obstore's copy of an older session is never used for a link)
        session = await self.session()
        if self._signer is None or self._signer_session is not session:
            self._signer, self._signer_session = self._make_store(), session
        return await self.presigned_get(self._signer, key, expires_in)


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


@dataclass(frozen=True)
class _S3Plan:
    """What opening one customer's bucket decided before the client is built."""

    backend: str
    bucket: str
    generic: bool
    endpoint: str
    region: str
    config: S3Config
    options: ClientConfig
    timeout_secs: float | None
    part_size: int
    max_concurrency: int
    secret: str


def _refusal(backend: str, bucket: str, secret: str) -> Callable[[str], StorageError]:
    """How an unusable configuration is refused (permanent; the secret never in the text)."""

    def refused(cause: str) -> StorageError:
        return StorageError.build(
            StorageErrorKind.PERMANENT_AUTH, backend, bucket, cause, secrets=[secret]
        )

    return refused


def open_s3(
    configuration: Mapping[str, Any],
    *,
    generic: bool,
    timeout_secs: float | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    max_concurrency: int = DEFAULT_CONCURRENCY,
    egress_proxy: str | None = None,
) -> S3ObjectStore:
    """A customer's bucket from its Telnyx-shaped configuration; `egress_proxy` is the egress
    guard every connection goes through (None: private networks are allowed)."""
    backend = "s3-generic" if generic else "s3"
    bucket = str(configuration.get("bucket") or "")
    secret = str(configuration.get("aws_secret_access_key") or "")
    refused = _refusal(backend, bucket, secret)
    access_key = str(configuration.get("aws_access_key_id") or "")
    role_arn = str(configuration.get("role_arn") or "")
    if not role_arn and (not access_key or not secret):
        raise refused("invalid configuration — the access key id and secret key are required")
    endpoint, region, virtual_hosted = _s3_endpoint(configuration, bucket, generic, refused)
    options = client_options(endpoint, timeout_secs)
    if egress_proxy:
        # an explicit proxy also switches off proxies from the environment (HTTP_PROXY and co.)
        options["proxy_url"] = egress_proxy
    plan = _S3Plan(
        backend,
        bucket,
        generic,
        endpoint,
        region,
        _s3_config(endpoint, region, virtual_hosted, generic=generic),
        options,
        timeout_secs,
        part_size,
        max_concurrency,
        secret,
    )
    if role_arn:
        return _open_with_role(plan, configuration, egress_proxy, refused)
    return _open_with_keys(plan, access_key, refused)


def _s3_endpoint(
    configuration: Mapping[str, Any],
    bucket: str,
    generic: bool,
    refused: Callable[[str], StorageError],
) -> tuple[str, str, bool]:
    """(endpoint, region, virtual_hosted) of a customer's bucket."""
    region = str(configuration.get("region") or "")
    if generic:
        endpoint = str(configuration.get("endpoint") or "").rstrip("/")
        if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).netloc:
            raise refused("invalid configuration — the endpoint must be an http(s) URL")
        # most S3-compatible stores ignore the region; SigV4 needs one
        return endpoint, region or "us-east-1", False
    if os.environ.get("AWS_ENDPOINT_URL"):
        return os.environ["AWS_ENDPOINT_URL"].rstrip("/"), region, False
    if not region:
        raise refused("invalid configuration — the region is required")
    endpoint, virtual_hosted = aws_endpoint(bucket, region)
    return endpoint, region, virtual_hosted


def _s3_config(endpoint: str, region: str, virtual_hosted: bool, *, generic: bool) -> S3Config:
    config: S3Config = {
        "region": region,
        "endpoint": endpoint,
        "virtual_hosted_style_request": virtual_hosted,
        "skip_signature": False,
        "checksum_algorithm": UPLOAD_CHECKSUM,
    }
    if generic:
        config["disable_tagging"] = True
        config["disable_bulk_delete"] = True
    return config


def _open_with_role(
    plan: _S3Plan,
    configuration: Mapping[str, Any],
    egress_proxy: str | None,
    refused: Callable[[str], StorageError],
) -> S3ObjectStore:
    target = _role_target(
        configuration,
        generic=plan.generic,
        endpoint=plan.endpoint,
        region=plan.region,
        egress_proxy=egress_proxy,
    )
    if isinstance(target, str):
        raise refused(f"invalid configuration — {target}")
    sessions = SESSIONS

    def build_with_role() -> S3Store:
        return S3Store(
            plan.bucket,
            config=plan.config,
            client_options=plan.options,
            retry_config=retry_config(plan.timeout_secs),
            credential_provider=sessions.provider(target),
        )

    try:
        build_with_role()
    except Exception as exc:
        raise refused(f"invalid configuration — {type(exc).__name__}") from None
    return RoleS3ObjectStore(
        build_with_role,
        target,
        sessions,
        backend=plan.backend,
        bucket=plan.bucket,
        endpoint=plan.endpoint if plan.generic else None,
        part_size=plan.part_size,
        max_concurrency=plan.max_concurrency,
    )


def _open_with_keys(
    plan: _S3Plan, access_key: str, refused: Callable[[str], StorageError]
) -> S3ObjectStore:
    try:
        store = S3Store(
            plan.bucket,
            config=plan.config,
            client_options=plan.options,
            retry_config=retry_config(plan.timeout_secs),
            credential_provider=_pinned_credentials(access_key, plan.secret),
        )
    except Exception as exc:
        raise refused(f"invalid configuration — {type(exc).__name__}") from None
    return S3ObjectStore(
        store,
        backend=plan.backend,
        bucket=plan.bucket,
        # s3: the AWS endpoint is implied by s3:// URLs; s3-generic: part of the canonical URL
        endpoint=plan.endpoint if plan.generic else None,
        part_size=plan.part_size,
        max_concurrency=plan.max_concurrency,
        secrets=[plan.secret],
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
    config: S3Config = {"skip_signature": False, "checksum_algorithm": UPLOAD_CHECKSUM}
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


def _open_aws(
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    allow_private_networks: bool = False,
) -> ObjectStore:
    return open_s3(
        configuration,
        generic=False,
        timeout_secs=timeout_secs,
        egress_proxy=egress_proxy_for(allow_private_networks),
    )


def _open_generic(
    configuration: Mapping[str, Any],
    *,
    timeout_secs: float | None = None,
    allow_private_networks: bool = False,
) -> ObjectStore:
    if allow_private_networks:
        return open_s3(configuration, generic=True, timeout_secs=timeout_secs)
    store = open_s3(
        configuration,
        generic=True,
        timeout_secs=timeout_secs,
        egress_proxy=egress_proxy_for(allow_private_networks),
    )
    # the customer chose this endpoint: a refusal before each request names it (the guard
    # enforces the policy on every connection either way)
    return EndpointCheckedStore(store, store.endpoint or "")


S3 = Provider(
    backend="s3",
    noun="bucket",
    configuration=S3Configuration,
    answer=S3ConfigurationData,
    secret_fields=SECRET_FIELDS,
    bucket_name_error=aws_bucket_error,
    open=_open_aws,
    uses_external_id=uses_role,
)
S3_GENERIC = Provider(
    backend="s3-generic",
    noun="bucket",
    configuration=S3GenericConfiguration,
    answer=S3GenericConfigurationData,
    secret_fields=SECRET_FIELDS,
    bucket_name_error=generic_bucket_error,
    open=_open_generic,
    uses_external_id=uses_role,
)
