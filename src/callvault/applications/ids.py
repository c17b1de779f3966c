"""Application ids: random 19-digit numeric strings, like Telnyx's (`1684641123236054244`).

Random rather than sequential so ids reveal nothing about how many applications exist and
cannot be guessed from one another; 19 digits fit a signed 64-bit integer, which some clients
assume (the spec marks them `x-format: int64`).
"""

from __future__ import annotations

import secrets

ID_DIGITS = 19
_LOWEST = 10 ** (ID_DIGITS - 1)
_HIGHEST_INT64 = 2**63 - 1


def new_application_id() -> str:
    return str(_LOWEST + secrets.randbelow(_HIGHEST_INT64 - _LOWEST + 1))


def is_application_id(value: str) -> bool:
    return len(value) == ID_DIGITS and value.isascii() and value.isdigit()
