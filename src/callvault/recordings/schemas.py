"""Shapes of the ingest metadata and of the Recordings API (Telnyx RecordingResponseData)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from callvault.encryption_keys.schemas import EncryptionDetails

# call ids become object metadata (one line of ASCII in every store) and call_leg_id may be the
# object key's leaf: printable ASCII without spaces, and never a path separator
CALL_ID = r"^[!-.0-~]{1,128}$"  # 0x21 to 0x7e except "/"
CUSTOM_FILE_NAME = r"^[A-Za-z0-9._-]{1,40}$"
MAX_CLIENT_STATE = 4096


class IngestMetadata(BaseModel):
    """The `metadata` part of `POST /internal/v1/recordings`.

    Unknown fields are ignored so that a newer media server can talk to an older callvault.
    """

    model_config = ConfigDict(extra="ignore")

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

    @field_validator("call_leg_id", "custom_file_name")
    @classmethod
    def _not_hidden(cls, value: str | None) -> str | None:
        # the object key's leaf: ".", ".." and dot-files have special meanings on disk
        if value is not None and value.startswith("."):
            raise ValueError("must not start with '.'")
        return value

    @field_validator("recording_started_at", "recording_ended_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # a time without zone is taken as UTC, the zone every Telnyx timestamp is in
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

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


class RecordingData(BaseModel):
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
    source: Literal["call"] = "call"
    status: Literal["completed"] = "completed"
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


class PaginationMeta(BaseModel):
    page_number: int
    page_size: int
    total_pages: int
    total_results: int


class RecordingList(BaseModel):
    data: list[RecordingData]
    meta: PaginationMeta


class DeleteRecordingsRequest(BaseModel):
    ids: list[str] = Field(max_length=250)


class StatusOk(BaseModel):
    status: Literal["ok"] = "ok"
