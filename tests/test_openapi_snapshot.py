"""The OpenAPI document, byte for byte, as it stood before the issue-23 refactor: moving code
between modules must not change what the API says of itself.

A deliberate API change regenerates the snapshot: `UPDATE_OPENAPI=1 .venv/bin/pytest
tests/test_openapi_snapshot.py`, and the diff is reviewed with the change."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

SNAPSHOT = Path(__file__).parent / "fixtures" / "openapi.json"


async def test_openapi_document_is_unchanged(api: httpx.AsyncClient) -> None:
    served = (await api.get("/v2/openapi.json")).content
    if os.environ.get("UPDATE_OPENAPI"):
        SNAPSHOT.write_bytes(served)
    assert served == SNAPSHOT.read_bytes(), (
        "the OpenAPI document changed; if on purpose, regenerate the snapshot (module docstring)"
    )
