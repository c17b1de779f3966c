"""Request and response bodies of /v2/custom_storage_credentials, shaped like Telnyx's.

The outer `backend` decides which configuration shape applies; the inner
`configuration.backend` (newer SDKs send it, the docs' curl examples do not) is optional and,
when present, must agree. Shape checks that can be done without I/O live here, so a bad request
answers 422 with a pointer at the offending field before anything is stored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError

from callvault import errors
from callvault.credentials.masking import looks_masked
from callvault.outbound.addresses import URL_PATTERN, url_shape_error
from callvault.storage.bucket_names import bucket_name_error

Backend = Literal["gcs", "s3", "s3-generic", "azure"]
BACKENDS: tuple[str, ...] = ("gcs", "s3", "s3-generic", "azure")

# Pydantic puts the chosen union member's tag into error locations; the error handler drops
# registered tags so that pointers name real fields (/configuration/bucket)
errors.UNION_TAGS.update(BACKENDS)

# AWS region names: us-east-1, ap-southeast-2, us-gov-west-1, eu-isoe-west-1, ...
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# S3-compatible stores use their own names: auto (R2), us-west-004 (B2), fr-par, garage, ...
_GENERIC_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Azure storage account names: 3-24 lowercase letters and digits
_AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")

Text = Annotated[str, Field(min_length=1, max_length=1024)]
Secret = Annotated[str, Field(min_length=1, max_length=64 * 1024)]

# Patterns for readers of the OpenAPI document; the validators below check the full rules
# (storage.bucket_names has every provider's naming rule).
_NO_WHITESPACE = r"^\S+$"
_BASE64 = r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_MASK = r"^\*{4}"
_MASK_NOTE = "or the masked value GET answered, which keeps the stored secret"


def _invalid(kind: str, message: str) -> PydanticCustomError:
    # the message never includes the value: values may be secrets
    return PydanticCustomError(kind, message)


def _check_bucket(backend: str, name: str) -> str:
    reason = bucket_name_error(backend, name)
    if reason is not None:
        raise _invalid("bucket_name", reason)
    return name


def _check_no_whitespace(value: str, what: str) -> str:
    if value != value.strip() or any(ch.isspace() for ch in value):
        raise _invalid("whitespace", f"{what} must not contain whitespace")
    return value


class _Configuration(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _S3Fields(_Configuration):
    bucket: Text = Field(description="Name of the bucket to be used to store recording files.")
    region: Text = Field(description="Region where the bucket is located.")
    aws_access_key_id: Text = Field(
        description="AWS credentials access key id (not a secret: answered in clear).",
        json_schema_extra={"pattern": _NO_WHITESPACE},
    )
    aws_secret_access_key: Secret = Field(
        description="AWS secret access key, " + _MASK_NOTE + ". Write-only: answered masked "
        "(all but the last 4 characters replaced by '*').",
        json_schema_extra={"pattern": _NO_WHITESPACE},
    )

    @field_validator("aws_access_key_id")
    @classmethod
    def _access_key(cls, value: str) -> str:
        return _check_no_whitespace(value, "aws_access_key_id")

    @field_validator("aws_secret_access_key")
    @classmethod
    def _secret_key(cls, value: str) -> str:
        if looks_masked(value):  # resolved against the stored secret by the service
            return value
        return _check_no_whitespace(value, "aws_secret_access_key")


class S3Configuration(_S3Fields):
    """AWS S3."""

    backend: Literal["s3"] = "s3"
    bucket: Text = Field(
        description="Name of the bucket to be used to store recording files (AWS naming rules).",
        json_schema_extra={"pattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"},
    )
    region: Text = Field(
        description="AWS region where the bucket is located, e.g. us-east-1.",
        json_schema_extra={"pattern": _AWS_REGION.pattern},
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return _check_bucket("s3", value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _AWS_REGION.match(value):
            raise _invalid("region", "region must be an AWS region name such as us-east-1")
        return value


class S3GenericConfiguration(_S3Fields):
    """An S3-compatible store (MinIO, Cloudflare R2, Wasabi, Backblaze B2, SeaweedFS...)."""

    backend: Literal["s3-generic"] = "s3-generic"
    bucket: Text = Field(
        description="Name of the bucket to be used to store recording files (S3 naming rules).",
        json_schema_extra={"pattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"},
    )
    region: Text = Field(
        description="Region name the store expects, e.g. us-east-1 or auto.",
        json_schema_extra={"pattern": _GENERIC_REGION.pattern},
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
        return _check_bucket("s3-generic", value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _GENERIC_REGION.match(value):
            raise _invalid(
                "region",
                "region must be a region name such as us-east-1 or auto (letters, "
                "digits, '-', '_', '.'; at most 64 characters)",
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        reason = url_shape_error(value)
        if reason is not None:
            raise _invalid("endpoint", f"endpoint: {reason}")
        if "?" in value or "#" in value:
            raise _invalid("endpoint", "endpoint must not contain a query or a fragment")
        # a trailing slash would double the slash in {endpoint}/{bucket}/{key}
        return value.rstrip("/")


class GcsConfiguration(_Configuration):
    """Google Cloud Storage."""

    backend: Literal["gcs"] = "gcs"
    bucket: Text = Field(
        description="Name of the bucket to be used to store recording files (GCS naming rules).",
        json_schema_extra={"pattern": r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"},
    )
    credentials: Secret = Field(
        description=(
            "The service-account key JSON as a string (type service_account, with "
            "client_email and private_key), " + _MASK_NOTE + ". Write-only: answered masked "
            "(all but the last 4 characters replaced by '*')."
        ),
        json_schema_extra={"contentMediaType": "application/json"},
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return _check_bucket("gcs", value)

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: str) -> str:
        if looks_masked(value):
            return value
        reason = service_account_error(value)
        if reason is not None:
            raise _invalid("gcs_credentials", reason)
        return value


class AzureConfiguration(_Configuration):
    """Azure Blob Storage."""

    backend: Literal["azure"] = "azure"
    bucket: Text = Field(
        description="The blob container to store recording files in (Azure naming rules: "
        "no two consecutive hyphens).",
        json_schema_extra={"pattern": r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"},
    )
    account_name: Text = Field(
        description="Azure Blob Storage account name.",
        json_schema_extra={"pattern": _AZURE_ACCOUNT.pattern},
    )
    account_key: Secret = Field(
        description="Azure Blob Storage account key (base64), " + _MASK_NOTE + ". "
        "Write-only: answered masked (all but the last 4 characters replaced by '*').",
        json_schema_extra={"anyOf": [{"pattern": _BASE64}, {"pattern": _MASK}]},
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return _check_bucket("azure", value)

    @field_validator("account_name")
    @classmethod
    def _account_name(cls, value: str) -> str:
        if not _AZURE_ACCOUNT.match(value):
            raise _invalid(
                "account_name", "account_name must be 3 to 24 lowercase letters and digits"
            )
        return value

    @field_validator("account_key")
    @classmethod
    def _account_key(cls, value: str) -> str:
        if looks_masked(value):
            return value
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("account_key", "account_key must be base64") from None
        if not decoded:
            raise _invalid("account_key", "account_key must be base64")
        return value


def service_account_error(value: str) -> str | None:
    """Why `value` is not a GCS service-account key JSON, or None. Pure."""
    try:
        info = json.loads(value)
    except (ValueError, RecursionError):
        return "credentials must be the service-account key JSON (it is not valid JSON)"
    if not isinstance(info, dict):
        return "credentials must be a JSON object (a service-account key)"
    if info.get("type") != "service_account":
        return 'credentials must be a service-account key ("type": "service_account")'
    for name in ("client_email", "private_key"):
        field = info.get(name)
        if not isinstance(field, str) or not field.strip():
            return f"credentials must contain a non-empty string {name!r}"
    return None


def _backend_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        tag = value.get("backend")
        return tag if isinstance(tag, str) else None
    return getattr(value, "backend", None)


Configuration = Annotated[
    Annotated[GcsConfiguration, Tag("gcs")]
    | Annotated[S3Configuration, Tag("s3")]
    | Annotated[S3GenericConfiguration, Tag("s3-generic")]
    | Annotated[AzureConfiguration, Tag("azure")],
    Discriminator(lambda value: _backend_tag(value)),
]
# the order of the members of `Configuration`, as its JSON schema lists them
_UNION_ORDER = ("gcs", "s3", "s3-generic", "azure")
AnyConfiguration = GcsConfiguration | S3Configuration | S3GenericConfiguration | AzureConfiguration


def _error(loc: tuple[str | int, ...], kind: str, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


class CredentialsRequest(BaseModel):
    """Body of POST and PUT: the backend and its configuration."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "backend": "s3",
                "configuration": {
                    "bucket": "example-bucket",
                    "region": "us-east-1",
                    "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
                    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                },
            }
        }
    )

    backend: Backend = Field(description="Storage backend type.")
    configuration: Configuration = Field(
        description=(
            "The backend's settings. `configuration.backend` may be omitted; when present it "
            "must equal `backend`."
        )
    )

    @model_validator(mode="wrap")
    @classmethod
    def _outer_backend_decides(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(data, dict) and data.get("backend") in BACKENDS and "configuration" in data:
            backend, inner = data["backend"], data["configuration"]
            if not isinstance(inner, dict):
                raise cls._single_error(
                    ("configuration",), "model_type", "configuration must be a JSON object", inner
                )
            if "backend" in inner and inner["backend"] != backend:
                raise cls._single_error(
                    ("configuration", "backend"),
                    "backend_mismatch",
                    f"configuration.backend must equal backend ({backend!r})",
                    inner["backend"],
                )
            data = {**data, "configuration": {**inner, "backend": backend}}
        try:
            return handler(data)
        except ValidationError as exc:
            found = exc.errors()
            if not any(tuple(err["loc"][:1]) == ("backend",) for err in found):
                raise
            # without a valid backend the configuration's shape is unknown: report the backend
            kept = [err for err in found if tuple(err["loc"][:1]) != ("configuration",)]
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    _error(tuple(err["loc"]), err["type"], err["msg"], err.get("input"))
                    for err in kept
                ],
            ) from None

    @classmethod
    def _single_error(
        cls, loc: tuple[str | int, ...], kind: str, message: str, value: Any
    ) -> ValidationError:
        return ValidationError.from_exception_data(
            cls.__name__, [_error(loc, kind, message, value)]
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The generated schema lets any configuration shape go with any backend; say that the
        # outer backend picks the shape, as the validator above enforces.
        json_schema = handler.resolve_ref_schema(handler(core_schema))
        shapes = json_schema["properties"]["configuration"]["oneOf"]
        json_schema["oneOf"] = [
            {
                "properties": {"backend": {"const": backend}, "configuration": shape},
                "required": ["backend", "configuration"],
            }
            for backend, shape in zip(_UNION_ORDER, shapes, strict=True)
        ]
        return json_schema

    def configuration_fields(self) -> dict[str, Any]:
        """The configuration to store: every field but the discriminator."""
        return self.configuration.model_dump(exclude={"backend"})


# ---- responses (secrets masked; no validation of the masked values)


class _ConfigurationData(BaseModel):
    pass


class S3ConfigurationData(_ConfigurationData):
    backend: Literal["s3"] = "s3"
    bucket: str
    region: str
    aws_access_key_id: str
    aws_secret_access_key: str = Field(description="Masked: all but the last 4 characters.")


class S3GenericConfigurationData(_ConfigurationData):
    backend: Literal["s3-generic"] = "s3-generic"
    bucket: str
    region: str
    endpoint: str
    aws_access_key_id: str
    aws_secret_access_key: str = Field(description="Masked: all but the last 4 characters.")


class GcsConfigurationData(_ConfigurationData):
    backend: Literal["gcs"] = "gcs"
    bucket: str
    credentials: str = Field(description="Masked: all but the last 4 characters.")


class AzureConfigurationData(_ConfigurationData):
    backend: Literal["azure"] = "azure"
    bucket: str
    account_name: str
    account_key: str = Field(description="Masked: all but the last 4 characters.")


ConfigurationData = Annotated[
    GcsConfigurationData
    | S3ConfigurationData
    | S3GenericConfigurationData
    | AzureConfigurationData,
    Field(discriminator="backend"),
]

_DATA_MODELS: dict[str, type[_ConfigurationData]] = {
    "s3": S3ConfigurationData,
    "s3-generic": S3GenericConfigurationData,
    "gcs": GcsConfigurationData,
    "azure": AzureConfigurationData,
}


class CustomStorageConfiguration(BaseModel):
    backend: Backend
    configuration: ConfigurationData


class CredentialsResponse(BaseModel):
    connection_id: str = Field(description="The Call Control application the settings belong to.")
    record_type: Literal["custom_storage_credentials"] = "custom_storage_credentials"
    data: CustomStorageConfiguration

    @classmethod
    def build(
        cls, connection_id: str, backend: str, masked_configuration: dict[str, Any]
    ) -> CredentialsResponse:
        model = _DATA_MODELS[backend]
        configuration = model.model_validate({**masked_configuration, "backend": backend})
        return cls(
            connection_id=connection_id,
            data=CustomStorageConfiguration.model_validate(
                {"backend": backend, "configuration": configuration.model_dump()}
            ),
        )


class ValidationResult(BaseModel):
    status: Literal["ok", "failed"]
    detail: str | None = Field(
        default=None, description="Why the probe failed (absent when status is ok)."
    )


class ValidationResponse(BaseModel):
    data: ValidationResult
