from __future__ import annotations

import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.accounts import keys, repository
from callvault.accounts.models import Account
from callvault.credentials.encryption import KeyRing


@dataclass(frozen=True)
class NewAccount:
    account_id: str
    api_key: str  # shown once
    webhook_public_key: str


async def create_account(session: AsyncSession, keyring: KeyRing, name: str) -> NewAccount:
    account_id = str(uuid.uuid4())
    api_key = keys.new_api_key()
    pair = keys.new_signing_key_pair()
    await repository.add(
        session,
        Account(
            id=account_id,
            name=name,
            api_key_hash=keys.hash_api_key(api_key),
            webhook_public_key=pair.public_b64,
            webhook_private_key_sealed=keyring.seal(pair.private_raw, account_id),
        ),
    )
    return NewAccount(account_id, api_key, pair.public_b64)


async def authenticate(session: AsyncSession, api_key: str) -> Account | None:
    account = await repository.by_api_key_hash(session, keys.hash_api_key(api_key))
    if account is None or not keys.api_key_matches(api_key, account.api_key_hash):
        return None
    return account


def signing_key(account: Account, keyring: KeyRing) -> Ed25519PrivateKey:
    raw = keyring.open(account.webhook_private_key_sealed, account.id)
    return Ed25519PrivateKey.from_private_bytes(raw)
