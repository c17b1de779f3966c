"""The form of callvault's ids."""

from __future__ import annotations

import uuid

from callvault.ids import is_uuid


def test_is_uuid() -> None:
    assert is_uuid(str(uuid.uuid4()))
    assert is_uuid(str(uuid.uuid4()).upper())
    assert not is_uuid("not-a-uuid")
    assert not is_uuid("")
