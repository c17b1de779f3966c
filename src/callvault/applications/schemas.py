"""Bodies of /v2/call_control_applications, shaped like Telnyx's CallControlApplication.

Every field of the spec's application object is stored and answered exactly as written, with
the spec's types, enums and defaults (callvault itself acts only on the webhook settings and
`active`; the call-routing settings are kept for configuration tools that read them back).
"""

from __future__ import annotations

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
from callvault.moments import telnyx_time
from callvault.outbound.addresses import MAX_URL_LENGTH, URL_PATTERN, url_shape_error
from callvault.pagination import PaginationMeta

IGNORED_FIELDS_NOTE = (
    "Every field of Telnyx's application object is stored and answered as written; fields "
    "outside it (and the read-only id, record_type, created_at, updated_at) are ignored."
)


def _check_url(value: str) -> str:
    reason = url_shape_error(value)
    if reason is not None:
        raise PydanticCustomError("url", reason)
    return value


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


def _failover_url(value: str | None) -> str | None:
    if value is None or value == "":
        return value
    if len(value) > MAX_URL_LENGTH:
        raise PydanticCustomError("url", f"the URL must be at most {MAX_URL_LENGTH} characters")
    return _check_url(value)


FailoverUrl = Annotated[
    str | None,
    AfterValidator(_failover_url),
    # "" (the spec's default) and null both mean none; each is answered as written
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


AnchorSite = Literal[
    "Latency",
    "Chicago, IL",
    "Ashburn, VA",
    "San Jose, CA",
    "London, UK",
    "Chennai, IN",
    "Amsterdam, Netherlands",
    "Toronto, Canada",
    "Sydney, Australia",
]
DtmfType = Literal["RFC 2833", "Inband", "SIP INFO"]
ReceiveSettings = Literal["only_my_connections", "from_anyone"]
ChannelLimit = Annotated[int, Field(ge=1, le=100_000, strict=True)]
# a DNS label: the subdomain becomes {sip_subdomain}.sip.telnyx.com
SipSubdomain = Annotated[str, Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
ProfileId = Annotated[str, Field(pattern=r"^[0-9]{1,19}$", examples=["1293384261075731499"])]
Tag = Annotated[str, Field(min_length=1, max_length=255)]
Tags = Annotated[list[Tag], Field(max_length=100)]
CommandTimeout = Annotated[int, Field(ge=1, le=300, strict=True), BeforeValidator(_whole_number)]


class CallControlApplicationInbound(BaseModel):
    model_config = ConfigDict(title="Call Control Application Inbound", extra="ignore")

    channel_limit: ChannelLimit | None = Field(
        default=None, description="Limit of concurrent inbound calls; null = none."
    )
    shaken_stir_enabled: StrictBool = False
    sip_subdomain: SipSubdomain | None = Field(
        default=None, description="A DNS label (letters, digits, inner hyphens; 1-63)."
    )
    sip_subdomain_receive_settings: ReceiveSettings = "from_anyone"


class CallControlApplicationOutbound(BaseModel):
    model_config = ConfigDict(title="Call Control Application Outbound", extra="ignore")

    channel_limit: ChannelLimit | None = Field(
        default=None, description="Limit of concurrent outbound calls; null = none."
    )
    outbound_voice_profile_id: ProfileId | None = Field(
        default=None, description="An int64 id as a string."
    )


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
        default="", description="URL tried when sending to the primary URL fails ('' = none)."
    )
    webhook_api_version: ApiVersion = Field(
        default="1", description="Webhook format: '1' (flat) or '2' (envelope)."
    )
    webhook_timeout_secs: TimeoutSecs | None = Field(
        default=None, description="Seconds to wait for a webhook answer; null = 2 s."
    )
    active: StrictBool = Field(default=True, description="Whether the application can be used.")
    recording_encryption_key_id: EncryptionKeyId = None
    anchorsite_override: AnchorSite = "Latency"
    call_cost_in_webhooks: StrictBool = False
    dtmf_type: DtmfType = "RFC 2833"
    first_command_timeout: StrictBool = False
    first_command_timeout_secs: CommandTimeout = 30
    inbound: CallControlApplicationInbound = Field(default_factory=CallControlApplicationInbound)
    outbound: CallControlApplicationOutbound = Field(default_factory=CallControlApplicationOutbound)
    redact_dtmf_debug_logging: StrictBool = False
    tags: Tags = Field(default_factory=list)

    def columns(self) -> dict[str, Any]:
        """Every stored column of the application, from this request."""
        values = self.model_dump(exclude={"inbound", "outbound"})
        values.update(nested_columns("inbound", self.inbound, all_fields=True))
        values.update(nested_columns("outbound", self.outbound, all_fields=True))
        return values


_UNSET: Any = None


class UpdateCallControlApplicationRequest(BaseModel):
    """A partial update: only the fields sent change (inside inbound/outbound too); null
    clears the nullable ones."""

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
    anchorsite_override: AnchorSite = Field(default=_UNSET)
    call_cost_in_webhooks: StrictBool = Field(default=_UNSET)
    dtmf_type: DtmfType = Field(default=_UNSET)
    first_command_timeout: StrictBool = Field(default=_UNSET)
    first_command_timeout_secs: CommandTimeout = Field(default=_UNSET)
    inbound: CallControlApplicationInbound = Field(default=_UNSET)
    outbound: CallControlApplicationOutbound = Field(default=_UNSET)
    redact_dtmf_debug_logging: StrictBool = Field(default=_UNSET)
    tags: Tags = Field(default=_UNSET)

    def changes(self) -> dict[str, Any]:
        """The columns to change: the fields sent, nested ones field by field."""
        values: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name in ("inbound", "outbound"):
                values.update(nested_columns(name, value, all_fields=False))
            else:
                values[name] = value
        return values


def nested_columns(prefix: str, value: BaseModel, *, all_fields: bool) -> dict[str, Any]:
    """inbound.channel_limit -> inbound_channel_limit, ...; outbound_voice_profile_id keeps
    its name. Only the fields that were sent unless `all_fields`."""
    names = type(value).model_fields if all_fields else value.model_fields_set
    return {_column(prefix, name): getattr(value, name) for name in names}


def _column(prefix: str, name: str) -> str:
    return name if name == "outbound_voice_profile_id" else f"{prefix}_{name}"


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
    anchorsite_override: AnchorSite
    call_cost_in_webhooks: bool
    dtmf_type: DtmfType
    first_command_timeout: bool
    first_command_timeout_secs: int
    inbound: CallControlApplicationInbound
    outbound: CallControlApplicationOutbound
    redact_dtmf_debug_logging: bool
    tags: list[str]
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
            anchorsite_override=application.anchorsite_override,  # type: ignore[arg-type]
            call_cost_in_webhooks=application.call_cost_in_webhooks,
            dtmf_type=application.dtmf_type,  # type: ignore[arg-type]
            first_command_timeout=application.first_command_timeout,
            first_command_timeout_secs=application.first_command_timeout_secs,
            inbound=CallControlApplicationInbound.model_construct(
                channel_limit=application.inbound_channel_limit,
                shaken_stir_enabled=application.inbound_shaken_stir_enabled,
                sip_subdomain=application.inbound_sip_subdomain,
                sip_subdomain_receive_settings=application.inbound_sip_subdomain_receive_settings,
            ),
            outbound=CallControlApplicationOutbound.model_construct(
                channel_limit=application.outbound_channel_limit,
                outbound_voice_profile_id=application.outbound_voice_profile_id,
            ),
            redact_dtmf_debug_logging=application.redact_dtmf_debug_logging,
            tags=list(application.tags or []),
            created_at=telnyx_time(application.created_at),
            updated_at=telnyx_time(application.updated_at),
        )


class CallControlApplicationResponse(BaseModel):
    model_config = ConfigDict(title="Call Control Application Response")

    data: CallControlApplication


class ListCallControlApplicationsResponse(BaseModel):
    model_config = ConfigDict(title="List Call Control Applications Response")

    data: list[CallControlApplication]
    meta: PaginationMeta
