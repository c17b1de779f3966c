"""Where a recording lands: object keys and content types. Pure functions. (Each provider
module has its own canonical URL form.)

Key layout (from the Telnyx seed): `{account_id}/{YYYY-MM-DD}/{leaf}-{unix start seconds}[.ext]`,
date and seconds of the recording's start in UTC, leaf = custom_file_name or call_leg_id.
Custom storage keys carry no extension (as the seed's examples); the default store adds one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Format = Literal["wav", "mp3"]

_CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
_UNSAFE_LEAF_CHARS = frozenset("/\\") | {chr(c) for c in range(32)} | {"\x7f"}


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
    # a slash would add directories (and "..": escape them) in every store
    if not value or value in (".", "..") or any(ch in _UNSAFE_LEAF_CHARS for ch in value):
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
