from __future__ import annotations

import base64

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from callvault.accounts import repository
from callvault.accounts.service import NewAccount, signing_key
from callvault.runtime import Runtime
from tests.conftest import auth

URL = "/v2/webhook_signing_key"


async def test_answers_the_callers_public_key_that_verifies_its_signatures(
    api: httpx.AsyncClient, account: NewAccount, other_account: NewAccount, runtime: Runtime
) -> None:
    response = await api.get(URL, headers=auth(account))
    assert response.status_code == 200
    public_key = response.json()["data"]["public_key"]
    assert response.json() == {"data": {"public_key": public_key}}
    assert public_key == account.webhook_public_key
    raw = base64.b64decode(public_key, validate=True)
    assert len(raw) == 32

    async with runtime.sessions() as session:
        stored = await repository.by_id(session, account.account_id)
    assert stored is not None
    signature = signing_key(stored, runtime.settings.keyring).sign(b"123|{}")
    Ed25519PublicKey.from_public_bytes(raw).verify(signature, b"123|{}")

    other = (await api.get(URL, headers=auth(other_account))).json()["data"]["public_key"]
    assert other == other_account.webhook_public_key != public_key


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer KEYwrong"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
async def test_needs_a_valid_api_key(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await api.get(URL, headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "10009"
    assert response.json()["errors"][0]["title"] == "Authentication failed"
