"""Bodies of /v2/call_control_applications, shaped like Telnyx's CallControlApplication.

callvault keeps only what recordings and webhooks need: the name, the webhook URLs, version and
timeout, and `active`. Telnyx's call-routing settings (`anchorsite_override`, `dtmf_type`,
`inbound`, `outbound`, ...) are accepted in requests and ignored, and answered with Telnyx's
defaults so that SDK models parse.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from callvault.applications.models import Application
from callvault.outbound.addresses import MAX_URL_LENGTH, URL_PATTERN, url_shape_error

IGNORED_FIELDS_NOTE = (
    "Telnyx's call-routing settings (anchorsite_override, dtmf_type, inbound, outbound, "
    "first_command_timeout, ...) are accepted and ignored."
)


def _check_url(value: str) -> str:
    reason = url_shape_error(value)
    if reason is not None:
        raise PydanticCustomError("url", reason)
    return value


def _empty_is_none(value: Any) -> Any:
    # Telnyx's spec defaults the failover URL to "": both "" and null mean "no failover"
    return None if value == "" else value


def _version_as_text(value: Any) -> Any:
    # the spec's type is a string, but 1 and 2 are an obvious meaning of the same thing
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, 2):
        return str(value)
    return value


WebhookUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        examples=["https://example.com/webhooks"],
        json_schema_extra={"format": "uri", "pattern": URL_PATTERN},
    ),
    AfterValidator(_check_url),
]
FailoverUrl = Annotated[
    WebhookUrl | None,
    BeforeValidator(_empty_is_none),
    # "" is accepted and means none, like null
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "maxLength": MAX_URL_LENGTH,
                    "format": "uri",
                    "pattern": URL_PATTERN,
                },
                {"type": "string", "maxLength": 0},
                {"type": "null"},
            ]
        }
    ),
]
ApplicationName = Annotated[str, Field(min_length=1, max_length=255, examples=["call-router"])]
ApiVersion = Annotated[Literal["1", "2"], BeforeValidator(_version_as_text)]


def _whole_number(value: Any) -> Any:
    # JSON does not tell 25 from 25.0; a string or 25.5 is still refused
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


TimeoutSecs = Annotated[int, Field(ge=0, le=30, strict=True), BeforeValidator(_whole_number)]
# ours (not Telnyx's): recordings ingested from now on are encrypted for this key
EncryptionKeyId = Annotated[
    str | None,
    Field(
        max_length=36,
        description="callvault extension: the id of a recording encryption key of this account "
        "(/v2/recording_encryption_keys); recordings ingested from then on are encrypted for "
        "it (docs/encryption.md). null = off.",
    ),
]


class CreateCallControlApplicationRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        title="Create Call Control Application Request",
        json_schema_extra={"description": IGNORED_FIELDS_NOTE},
    )

    application_name: ApplicationName = Field(description="A name to help manage the application.")
    webhook_event_url: WebhookUrl = Field(
        description="http(s) URL that webhooks are sent to. Must not resolve to a private "
        "network unless the operator allows it."
    )
    webhook_event_failover_url: FailoverUrl = Field(
        default=None, description="URL tried when sending to the primary URL fails ('' = none)."
    )
    webhook_api_version: ApiVersion = Field(
        default="1", description="Webhook format: '1' (flat) or '2' (envelope)."
    )
    webhook_timeout_secs: TimeoutSecs | None = Field(
        default=None, description="Seconds to wait for a webhook answer; null = 2 s."
    )
    active: StrictBool = Field(default=True, description="Whether the application can be used.")
    recording_encryption_key_id: EncryptionKeyId = None


_UNSET: Any = None


class UpdateCallControlApplicationRequest(BaseModel):
    """A partial update: only the fields sent change; null clears the nullable ones."""

    model_config = ConfigDict(
        extra="ignore",
        title="Update Call Control Application Request",
        json_schema_extra={"description": "Only the fields sent change. " + IGNORED_FIELDS_NOTE},
    )

    # non-nullable fields default to None, which Pydantic does not validate, while an explicit
    # null is validated and refused; `changes()` reads only the fields that were sent
    application_name: ApplicationName = Field(default=_UNSET)
    webhook_event_url: WebhookUrl = Field(default=_UNSET)
    webhook_event_failover_url: FailoverUrl = Field(default=None)
    webhook_api_version: ApiVersion = Field(default=_UNSET)
    webhook_timeout_secs: TimeoutSecs | None = Field(default=None)
    active: StrictBool = Field(default=_UNSET)
    recording_encryption_key_id: EncryptionKeyId = None

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class CallControlApplicationInbound(BaseModel):
    channel_limit: int | None = None
    shaken_stir_enabled: bool = False
    sip_subdomain: str | None = None
    sip_subdomain_receive_settings: Literal["only_my_connections", "from_anyone"] = "from_anyone"


class CallControlApplicationOutbound(BaseModel):
    channel_limit: int | None = None
    outbound_voice_profile_id: str | None = None


def telnyx_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as Telnyx writes it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CallControlApplication(BaseModel):
    model_config = ConfigDict(title="Call Control Application")

    record_type: Literal["call_control_application"] = "call_control_application"
    id: str = Field(description="19-digit numeric string.", examples=["1684641123236054244"])
    application_name: str
    webhook_event_url: str
    webhook_event_failover_url: str | None
    webhook_api_version: Literal["1", "2"]
    webhook_timeout_secs: int | None
    active: bool
    recording_encryption_key_id: EncryptionKeyId = None
    # Telnyx settings callvault does not use, always answered with Telnyx's defaults
    anchorsite_override: str = Field(default="Latency", description="Always Telnyx's default.")
    call_cost_in_webhooks: bool = False
    dtmf_type: Literal["RFC 2833", "Inband", "SIP INFO"] = "RFC 2833"
    first_command_timeout: bool = False
    first_command_timeout_secs: int = 30
    inbound: CallControlApplicationInbound = Field(default_factory=CallControlApplicationInbound)
    outbound: CallControlApplicationOutbound = Field(default_factory=CallControlApplicationOutbound)
    redact_dtmf_debug_logging: bool = False
    tags: list[str] = Field(default_factory=list)
    created_at: str = Field(examples=["2018-02-02T22:25:27.521Z"])
    updated_at: str = Field(examples=["2018-02-02T22:25:27.521Z"])

    @classmethod
    def of(cls, application: Application) -> CallControlApplication:
        return cls(
            id=application.id,
            application_name=application.application_name,
            webhook_event_url=application.webhook_event_url,
            webhook_event_failover_url=application.webhook_event_failover_url,
            webhook_api_version=application.webhook_api_version,  # type: ignore[arg-type]
            webhook_timeout_secs=application.webhook_timeout_secs,
            active=application.active,
            recording_encryption_key_id=application.recording_encryption_key_id,
            created_at=telnyx_time(application.created_at),
            updated_at=telnyx_time(application.updated_at),
        )


class CallControlApplicationResponse(BaseModel):
    model_config = ConfigDict(title="Call Control Application Response")

    data: CallControlApplication


class PaginationMeta(BaseModel):
    page_number: int
    page_size: int
    total_pages: int
    total_results: int


class ListCallControlApplicationsResponse(BaseModel):
    model_config = ConfigDict(title="List Call Control Applications Response")

    data: list[CallControlApplication]
    meta: PaginationMeta
