from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.accounts import keys, repository
from callvault.accounts.models import Account, ApiKey, KeyHolder
from callvault.crypto import KeyRing
from callvault.db import utcnow

FIRST_KEY_NAME = "default"
MAX_KEY_NAME_CHARS = 200


@dataclass(frozen=True)
class NewAccount:
    account_id: str
    api_key: str  # shown once
    webhook_public_key: str


@dataclass(frozen=True)
class NewApiKey:
    id: str
    api_key: str  # shown once
    name: str | None
    created_at: datetime


class KeyNameRefused(ValueError):
    pass


async def create_account(session: AsyncSession, keyring: KeyRing, name: str) -> NewAccount:
    account_id = str(uuid.uuid4())
    pair = keys.new_signing_key_pair()
    await repository.add(
        session,
        Account(
            id=account_id,
            name=name,
            webhook_public_key=pair.public_b64,
            webhook_private_key_sealed=keyring.seal(pair.private_raw, account_id),
        ),
    )
    created = await create_api_key(session, account_id, FIRST_KEY_NAME)
    return NewAccount(account_id, created.api_key, pair.public_b64)


def checked_key_name(name: str | None) -> str | None:
    name = name.strip() if name is not None else None
    if name and len(name) > MAX_KEY_NAME_CHARS:
        raise KeyNameRefused(f"name: at most {MAX_KEY_NAME_CHARS} characters")
    return name or None


async def create_api_key(session: AsyncSession, account_id: str, name: str | None) -> NewApiKey:
    """A new key of an existing account (the caller checks it exists)."""
    api_key = keys.new_api_key()
    row = ApiKey(
        id=str(uuid.uuid4()),
        account_id=account_id,
        name=checked_key_name(name),
        key_hash=keys.hash_api_key(api_key),
        created_at=utcnow(),
    )
    await repository.add_key(session, row)
    return NewApiKey(row.id, api_key, row.name, row.created_at)


async def revoke_api_key(session: AsyncSession, key_id: str, account_id: str | None = None) -> bool:
    """Delete the key (of `account_id`, when given); False when there is no such key. Its
    console sessions go with it (ON DELETE CASCADE), and a database trigger moves the
    generation every process checks its cached keys against (accounts/cache.py)."""
    row = await repository.key_by_id(session, key_id)
    if row is None or (account_id is not None and row.account_id != account_id):
        return False
    await repository.delete_key(session, key_id)
    return True


async def authenticate_key(session: AsyncSession, api_key: str) -> KeyHolder | None:
    found = await repository.by_api_key_hash(session, keys.hash_api_key(api_key))
    if found is None or not keys.api_key_matches(api_key, found[1].key_hash):
        return None
    return KeyHolder(found[0], found[1].id)


async def authenticate(session: AsyncSession, api_key: str) -> Account | None:
    holder = await authenticate_key(session, api_key)
    return holder.account if holder is not None else None


def signing_key(account: Account, keyring: KeyRing) -> Ed25519PrivateKey:
    raw = keyring.open(account.webhook_private_key_sealed, account.id)
    return Ed25519PrivateKey.from_private_bytes(raw)
