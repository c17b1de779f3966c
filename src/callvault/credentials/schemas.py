"""Request and response bodies of /v2/custom_storage_credentials, shaped like Telnyx's.

The outer `backend` decides which configuration shape applies; the inner
`configuration.backend` (newer SDKs send it, the docs' curl examples do not) is optional and,
when present, must agree. Shape checks that can be done without I/O live here, so a bad request
answers 422 with a pointer at the offending field before anything is stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError

from callvault import errors
from callvault.storage.configuration import AnswerModel
from callvault.storage.registry import BACKENDS, PROVIDERS

# the provider names, as the `backend` field's enum (the registry's order)
Backend: Any = Literal[BACKENDS]

# Pydantic puts the chosen union member's tag into error locations; the error handler drops
# registered tags so that pointers name real fields (/configuration/bucket)
errors.UNION_TAGS.update(BACKENDS)


def _backend_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        tag = value.get("backend")
        return tag if isinstance(tag, str) else None
    return getattr(value, "backend", None)


# every provider's configuration model, chosen by `backend`
Configuration: Any = Annotated[
    Union[tuple(Annotated[p.configuration, Tag(p.backend)] for p in PROVIDERS)],  # noqa: UP007
    Discriminator(lambda value: _backend_tag(value)),
]


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
            for backend, shape in zip(BACKENDS, shapes, strict=True)
        ]
        return json_schema

    def configuration_fields(self) -> dict[str, Any]:
        """The configuration to store: every field but the discriminator."""
        return self.configuration.model_dump(exclude={"backend"}, exclude_none=True)


# ---- responses (secrets masked; no validation of the masked values)


ConfigurationData: Any = Annotated[
    Union[tuple(p.answer for p in PROVIDERS)],  # noqa: UP007
    Field(discriminator="backend"),
]

_DATA_MODELS: dict[str, type[AnswerModel]] = {p.backend: p.answer for p in PROVIDERS}


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


class AwsRoleSetupData(BaseModel):
    external_id: str = Field(
        description="The ExternalId callvault sends when it assumes the role of this "
        "connection: put it in the role's trust policy (sts:ExternalId condition). Made by "
        "callvault, once per connection; never chosen by the customer."
    )
    principal_arn: str = Field(description="callvault's own AWS principal, to trust.")
    trust_policy: dict[str, Any] = Field(description="The role's trust policy, ready to paste.")
    permissions_policy: dict[str, Any] = Field(
        description="The least-privilege permissions the role needs on the bucket "
        "(s3:PutObject; s3:GetObject to verify uploads and sign download links; "
        "s3:DeleteObject for the validate probe)."
    )


AwsRoleSetup = AwsRoleSetupData


class AwsRoleSetupResponse(BaseModel):
    data: AwsRoleSetupData
