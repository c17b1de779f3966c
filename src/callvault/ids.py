"""The form of the ids callvault makes (standard library only)."""

from __future__ import annotations

import uuid


def is_uuid(value: str) -> bool:
    """Whether `value` is a UUID (the form of recording and webhook event ids)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
