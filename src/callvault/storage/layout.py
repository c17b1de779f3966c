"""Where a recording lands: object keys, content types and the metadata a recording's object
carries (`recording_object`). Pure functions. (Each provider module has its own canonical URL
form.)

Key layout (from the Telnyx seed): `{account_id}/{YYYY-MM-DD}/{leaf}-{unix start seconds}[.ext]`,
date and seconds of the recording's start in UTC, leaf = custom_file_name or call_leg_id.
Custom storage keys carry no extension (as the seed's examples); the default store adds one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Format = Literal["wav", "mp3"]

_CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
# an encrypted recording is ciphertext, whatever the audio inside
ENCRYPTED_CONTENT_TYPE = "application/octet-stream"

# The one rule for call ids (call_control_id, call_leg_id, call_session_id, sip_call_id, ...):
# they become object metadata (one line of ASCII in every store) and call_leg_id may be the
# object key's leaf: printable ASCII without spaces, never "/" or "\\" (a path separator on
# some stores and tools). Ingest validation (recordings/schemas.py) uses these same patterns.
_ID_CHARS = r"!-.0-\[\]-~"  # 0x21..0x7e except "/" and "\\"
CALL_ID_PATTERN = rf"^[{_ID_CHARS}]{{1,128}}$"
CUSTOM_FILE_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,40}$"
_SAFE_LEAF = re.compile(CALL_ID_PATTERN)
_SAFE_SEGMENT = re.compile(rf"[{_ID_CHARS}]+")


def leaf_error(value: str) -> str | None:
    """Why `value` cannot be an object key's leaf (a call_leg_id or custom_file_name), or None."""
    if not _SAFE_LEAF.match(value):
        return "must be 1-128 printable ASCII characters without spaces, '/' or '\\'"
    # ".", ".." and dot-files have special meanings on disk
    if value.startswith("."):
        return "must not start with '.'"
    return None


def object_key(account_id: str, started_at: datetime, leaf_name: str, extension: str | None) -> str:
    if started_at.tzinfo is None:
        # a naive time is ambiguous; the date directory must not depend on the host's zone
        raise ValueError("started_at must be timezone-aware")
    _check_segment("account_id", account_id)
    _check_segment("leaf_name", leaf_name)
    utc = started_at.astimezone(UTC)
    seconds = int(utc.timestamp() // 1)  # floor, also for instants before 1970
    key = f"{account_id}/{utc:%Y-%m-%d}/{leaf_name}-{seconds}"
    if extension:
        key += f".{extension.lstrip('.')}"
    return key


def _check_segment(name: str, value: str) -> None:
    # the id rule's characters (a slash would add directories, and "..": escape them), and
    # never a dot-name
    if not _SAFE_SEGMENT.fullmatch(value) or value.startswith("."):
        raise ValueError(f"{name} {value!r} cannot be part of an object key")


def content_type_for(format: str) -> str:
    try:
        return _CONTENT_TYPES[format]
    except KeyError:
        raise ValueError(f"unknown recording format {format!r}") from None


def extension_for(format: str) -> str:
    if format not in _CONTENT_TYPES:
        raise ValueError(f"unknown recording format {format!r}")
    return format


@dataclass(frozen=True)
class RecordingObject:
    """A recording as a stored object, the same in the default store and in custom storage:
    the leaf of its key (`object_key`), its content type and its metadata."""

    leaf: str
    content_type: str
    metadata: dict[str, str]


def recording_leaf(custom_file_name: str | None, call_leg_id: str, disambiguator: str = "") -> str:
    """The key's leaf: custom_file_name or call_leg_id, `-{disambiguator}` added when given."""
    leaf = custom_file_name or call_leg_id
    return f"{leaf}-{disambiguator}" if disambiguator else leaf


def recording_object(
    *,
    recording_id: str,
    connection_id: str,
    call_control_id: str,
    call_leg_id: str,
    call_session_id: str,
    custom_file_name: str | None,
    format: str,
    sha256: str,
    decryption_metadata: Mapping[str, str],
) -> RecordingObject:
    """`decryption_metadata` (encryption_keys/scheme.py's `object_metadata`; empty for plain
    audio) lets the object alone suffice to decrypt it; an object that carries it is
    ciphertext, stored as ENCRYPTED_CONTENT_TYPE."""
    metadata = {
        "call_control_id": call_control_id,
        "call_leg_id": call_leg_id,
        "call_session_id": call_session_id,
        "connection_id": connection_id,
        "recording_id": recording_id,
        "sha256": sha256,
        **decryption_metadata,
    }
    return RecordingObject(
        leaf=recording_leaf(custom_file_name, call_leg_id),
        content_type=ENCRYPTED_CONTENT_TYPE if decryption_metadata else content_type_for(format),
        metadata=metadata,
    )
