"""Shapes of the ingest metadata and of the Recordings API (Telnyx RecordingResponseData)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from callvault.encryption_keys.schemas import EncryptionDetails
from callvault.moments import as_utc
from callvault.pagination import PaginationMeta
from callvault.storage.layout import CALL_ID_PATTERN, CUSTOM_FILE_NAME_PATTERN, leaf_error

# the one id rule, shared with the object key layout
CALL_ID = CALL_ID_PATTERN
CUSTOM_FILE_NAME = CUSTOM_FILE_NAME_PATTERN
MAX_CLIENT_STATE = 4096
# a number (+E.164 or not), a SIP URI or a client name: printable ASCII, no spaces
PARTY = r"^[!-~]{1,128}$"
SIP_CALL_ID = r"^[!-~]{1,255}$"  # RFC 3261 Call-ID: word characters and @


class IngestMetadata(BaseModel):
    """The `metadata` part of `POST /internal/v1/recordings`.

    Unknown fields are ignored so that a newer media server can talk to an older callvault.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    connection_id: str = Field(min_length=1, max_length=24, pattern=r"^[!-~]+$")
    call_control_id: str = Field(pattern=CALL_ID)
    call_leg_id: str = Field(pattern=CALL_ID)
    call_session_id: str = Field(pattern=CALL_ID)
    format: Literal["wav", "mp3"]
    channels: Literal["single", "dual"]
    recording_started_at: datetime
    recording_ended_at: datetime
    client_state: str | None = Field(default=None, max_length=MAX_CLIENT_STATE)
    custom_file_name: str | None = Field(default=None, pattern=CUSTOM_FILE_NAME)
    # optional facts of Telnyx's recording object, named as in the spec, passed through to the
    # Recordings API (and its filters)
    from_: str | None = Field(default=None, alias="from", pattern=PARTY)
    to: str | None = Field(default=None, pattern=PARTY)
    conference_id: str | None = Field(default=None, pattern=CALL_ID)
    conference_region: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    initiated_by: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    sip_call_id: str | None = Field(default=None, pattern=SIP_CALL_ID)
    source: Literal["call", "conference"] = "call"

    @field_validator("call_leg_id", "custom_file_name")
    @classmethod
    def _not_hidden(cls, value: str | None) -> str | None:
        # the object key's leaf: the layout's own rule
        if value is not None and (problem := leaf_error(value)):
            raise ValueError(problem)
        return value

    @field_validator("recording_started_at", "recording_ended_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # a time without zone is taken as UTC, the zone every Telnyx timestamp is in
        return as_utc(value)

    @field_validator("client_state")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("client_state must be base64") from None
        return value

    @field_validator("recording_ended_at")
    @classmethod
    def _ordered(cls, value: datetime, info: ValidationInfo) -> datetime:
        started = info.data.get("recording_started_at")
        if started is not None and value < started:
            raise ValueError("recording_ended_at is before recording_started_at")
        return value


class IngestResult(BaseModel):
    id: str
    status: str


class IngestResponse(BaseModel):
    data: IngestResult


StorageStateName = Literal["received", "stored", "failed", "deleted"]


class StorageState(BaseModel):
    """callvault's own word on where the bytes are (Telnyx's `status` is always "completed")."""

    state: StorageStateName = Field(
        description="received: durable in the default store, the worker has not finished; "
        "stored: in its final place; failed: custom storage failed permanently, the recording "
        "is kept in the default store; deleted: removed through this API."
    )
    location: Literal["default", "custom"] | None = Field(
        description="default: callvault's default store; custom: the customer's bucket; "
        "null once deleted."
    )
    backend: str | None = Field(
        default=None, description="The custom storage backend when location is custom."
    )
    error: str | None = Field(
        default=None, description="Why custom storage failed (state failed), else null."
    )
    detail: str | None = Field(
        default=None,
        description="What failed precisely, as the `call.recording.error` webhook's `detail` "
        'says it (e.g. "s3 bucket b: SignatureDoesNotMatch — the secret key is wrong"); '
        "null unless state is failed.",
    )


class RecordingData(BaseModel):
    """Telnyx's RecordingResponseData; `format`, `size_bytes`, `sha256` and `storage` are
    callvault's documented additions (docs/api.md)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: str
    record_type: Literal["recording"] = "recording"
    call_control_id: str
    call_leg_id: str
    call_session_id: str
    connection_id: str
    channels: Literal["single", "dual"]
    format: Literal["wav", "mp3"]
    created_at: datetime
    updated_at: datetime
    recording_started_at: datetime
    recording_ended_at: datetime
    duration_millis: int
    download_urls: dict[str, str]
    source: Literal["call", "conference"] = "call"
    status: Literal["completed"] = "completed"
    conference_id: str | None = None
    from_: str | None = Field(default=None, alias="from", serialization_alias="from")
    to: str | None = None
    initiated_by: str | None = None
    size_bytes: int
    sha256: str
    storage: StorageState
    encryption_details: EncryptionDetails | None = Field(
        default=None,
        description="callvault extension: how the stored bytes are encrypted (null: in "
        "clear); size_bytes and sha256 are those of the stored bytes (docs/encryption.md).",
    )


class RecordingResponse(BaseModel):
    data: RecordingData


class RecordingList(BaseModel):
    data: list[RecordingData]
    meta: PaginationMeta


class DeleteRecordingsRequest(BaseModel):
    # no maximum, as in Telnyx's spec (the 1 MiB body limit bounds it); deleted in batches
    ids: list[str]


class StatusOk(BaseModel):
    status: Literal["ok"] = "ok"
